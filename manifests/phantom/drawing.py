"""Phantom drawing: a study as a frontal chest radiograph, vectorised numpy.

Body outline (with breast shadows in women), lungs with vascular markings, heart and
mediastinum (with the aorta unfolding with age), diaphragm domes, ribs, clavicles and spine
(less dense with age, costal cartilage calcifying), then the study's findings and devices, on
a normalised coordinate grid. The patient's right is on the image's left (clinical display).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from manifests.phantom.findings import Patient, Study, study_ctr

# Where each of the patient's sides lies on the image (clinical display convention).
IMAGE_HALF = {"right": "left", "left": "right"}


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]: x (1, size) and y (size, 1), float32."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2 - 1
    return c[None, :], c[:, None]


@functools.lru_cache(maxsize=8)
def _upsampler(size: int, coarse: int = 8) -> np.ndarray:
    """(size, coarse) bilinear interpolation matrix: A @ noise @ A.T upsamples smoothly."""
    pos = (np.arange(size) + 0.5) / size * coarse - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, coarse - 1)
    hi = np.clip(lo + 1, 0, coarse - 1)
    w = np.clip(pos - lo, 0, 1)
    a = np.zeros((size, coarse), dtype=np.float32)
    a[np.arange(size), lo] += 1 - w
    a[np.arange(size), hi] += w
    return a


def _smooth_noise(rng: np.random.Generator, size: int, coarse: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid, bilinearly upsampled (two matmuls)."""
    a = _upsampler(size, coarse)
    return a @ rng.random((coarse, coarse), dtype=np.float32) @ a.T


def _fluffy(d: np.ndarray) -> np.ndarray:
    """A wide smoothstep edge (airspace disease fades into aerated lung, no visible rim)."""
    t = np.clip(d / 0.2 + 0.5, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _soft(d: np.ndarray, px: float) -> np.ndarray:
    """A soft mask from a signed distance (positive inside), about one pixel of ramp."""
    out = d * np.float32(1 / px)
    out += 0.5
    return np.minimum(np.maximum(out, 0.0, out=out), 1.0, out=out)


def _blur(img: np.ndarray) -> np.ndarray:
    """A cheap separable [1, 2, 1] / 4 blur (the detector's point-spread)."""
    out = img.copy()
    out[1:-1, :] = 0.25 * img[:-2, :] + 0.5 * img[1:-1, :] + 0.25 * img[2:, :]
    tmp = out.copy()
    out[:, 1:-1] = 0.25 * tmp[:, :-2] + 0.5 * tmp[:, 1:-1] + 0.25 * tmp[:, 2:]
    return out


def _splat(canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray, weight: float) -> None:
    """Add points given in [-1, 1] coordinates to `canvas` (bilinear), for thin lines."""
    size = canvas.shape[0]
    px = (xs + 1) * 0.5 * size - 0.5
    py = (ys + 1) * 0.5 * size - 0.5
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    for dx, dy, w in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        np.add.at(canvas, (yi[ok], xi[ok]), weight * w[ok])


def _curve(points: list[tuple[float, float]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense samples along a polyline through `points` (about 3 per pixel)."""
    pts = np.asarray(points, dtype=np.float64)
    seg = np.diff(pts, axis=0)
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    xs, ys = [], []
    for (x0, y0), (dx, dy), length in zip(pts[:-1], seg, lengths, strict=True):
        k = max(2, int(length * size * 1.5))
        t = np.arange(k) / k
        xs.append(x0 + dx * t)
        ys.append(y0 + dy * t)
    return np.concatenate(xs), np.concatenate(ys)


# Lung ellipse (side coordinates: L = distance from the midline, Y down): centre, semi-axes
# and the skew that puts the apex medially.
LUNG_L, LUNG_Y, LUNG_A, LUNG_B, LUNG_SKEW = 0.45, 0.08, 0.38, 0.84, 0.14
THORACIC_WIDTH = 2 * (LUNG_L + LUNG_A)  # inner rib margins: the CTR's denominator


def _dome_y(L: np.ndarray, dome: float) -> np.ndarray:
    """The hemidiaphragm: highest medially, deepest at the costophrenic angle."""
    return dome + 0.9 * (L - 0.3) ** 2


def _lung_distance(L: np.ndarray, Y: np.ndarray, dome: float) -> np.ndarray:
    """Signed distance-like field of one lung (positive inside), side coordinates.

    A skewed ellipse (rounded apex, convex lateral wall) cut by the mediastinum medially and
    by the diaphragm dome below; the dome meets the wall in a sharp costophrenic angle.
    """
    lu = (L - LUNG_L - LUNG_SKEW * (Y - LUNG_Y)) / LUNG_A
    lv = (Y - LUNG_Y) / LUNG_B
    ellipse = (1 - np.sqrt(lu * lu + lv * lv)) * LUNG_A
    return np.minimum(np.minimum(ellipse, L - 0.07), _dome_y(L, dome) - Y)


def _vessels(L, Y, right, rng) -> np.ndarray:
    """Vascular markings: tapering lines radiating from each hilum, plus the hilar shadows."""
    hy = -0.02
    dl, dy = L - 0.15, Y - hy
    r = np.sqrt(dl * dl + dy * dy)
    theta = np.arctan2(dy, dl)
    phase = np.where(right, *rng.uniform(0, 6.3, size=2).astype(np.float32))
    n1, n2 = int(rng.integers(7, 10)), int(rng.integers(12, 16))
    wob = 0.6 * np.sin(r * 11.0 + np.float32(rng.uniform(0, 6.3)))
    c1 = np.clip(np.cos(n1 * theta + phase + 1.1 * wob), 0, 1)
    c2 = np.clip(np.cos(n2 * theta - 0.7 * phase + 0.9 * wob), 0, 1)
    c1 *= c1
    c1 *= c1
    c1 *= c1  # ** 8: thin lines, cheaper than a float power
    c2 *= c2
    c2 *= c2
    c2 *= c2
    c2 *= c2
    vessels = (c1 + 0.7 * c2 * np.clip(r / 0.25, 0, 1)) * np.exp(-r / 0.3)
    hilum = np.exp(-((L - 0.2) ** 2 + (dy / 1.6) ** 2) / 0.006)
    return vessels * np.clip(r / 0.04, 0, 1) + 0.7 * hilum


def _breasts(L, Y, right, p: Patient) -> np.ndarray:
    """Breast soft tissue (attenuation) over each lower zone: a rounded mound whose
    inferior-lateral edge is a soft curve and whose upper-medial part fades out."""
    grow = np.where(right, np.float32(1 + p.breast_asymmetry), np.float32(1 - p.breast_asymmetry))
    scale = np.float32(p.breast) * grow  # (1, S): per side
    u = (L - 0.52) / (0.3 * scale)
    v = (Y - np.float32(0.16 + p.breast_drop)) / np.float32(0.25 * p.breast)  # |v| < 1 here
    r2 = u * u + v * v
    edge = np.clip((1 - r2) / 0.2, 0, 1)  # the rim: a ramp a few pixels wide
    edge = edge * edge * (3 - 2 * edge)
    dome = np.sqrt(np.clip(1 - r2, 0, 1))  # thickest in the middle
    fade = np.clip((0.6 * u + 0.8 * v + 1.1) / 1.3, 0, 1)  # thin toward the upper-medial side
    return (0.28 * scale) * edge * (0.4 + 0.6 * dome) * (fade * fade * (3 - 2 * fade))


def _cartilage(L, ant_p, afrac, p: Patient) -> np.ndarray:
    """Calcified costal cartilage: flecks along the cartilages medial to the anterior rib
    ends, along their margins in men and central in women."""
    rib = np.floor(ant_p)
    beads = np.cos(L * np.float32(2 * math.pi / 0.08) + 2.4 * rib + p.anatomy_phase)
    beads = np.clip(beads, 0, 1)
    beads *= beads
    amount = 0.5 + 0.5 * np.sin(3.7 * rib + 1.3 * p.anatomy_phase)  # some cartilages more
    off = np.abs(afrac - 0.5)
    if p.sex == "F":
        where = np.exp(-((off / 0.09) ** 2))
    else:
        where = np.exp(-(((off - 0.13) / 0.05) ** 2))
    span = np.clip((0.34 - L) / 0.03, 0, 1) * np.clip((L - 0.12) / 0.05, 0, 1)
    return beads * amount * where * (span * ((ant_p > 0.5) & (ant_p < 5)))


def draw_phantom(study: Study, size: int) -> np.ndarray:
    """Draw one study as a 2-D uint8 image of `size` x `size` pixels.

    Shapes add up path lengths (attenuation) `A`; the film shows `1 - exp(-A)`, so bone
    stands out over the dark lungs and fades over the bright mediastinum as on a real
    radiograph.
    """
    rng = np.random.default_rng(study.draw_seed)
    p = study.patient
    f = study.findings
    gx, gy = _grid(size)
    sx = p.body_width * study.zoom
    sy = p.body_height * study.zoom
    # X is a row (1, S) and Y a column (S, 1): terms of one coordinate cost S, not S * S,
    # and numpy broadcasting builds the full image only where both meet.
    X = (gx - study.shift_x) / np.float32(sx)
    Y = Y1 = (gy - study.shift_y) / np.float32(sy)
    # Edge width: one pixel, but never sharper than at 160 px (large images stay film-like).
    px = max(2.0 / size, 1 / 80) / min(sx, sy)
    L = np.abs(X)
    right = X < 0  # the patient's right is on the image's left
    ap = study.view == "AP"
    lift = 0.05 if ap else 0.0  # supine AP films: lower lung volumes
    right_dome, left_dome = p.right_dome - lift, p.left_dome - lift
    dome = np.where(right, np.float32(right_dome), np.float32(left_dome))

    # Body: neck, sloping shoulders, chest wall; thickness like a chord through a cylinder.
    half_w = 0.2 + 0.74 * np.clip((Y1 + 0.98) / 0.3, 0, 1) ** 0.7 - 0.05 * np.clip(Y1 - 0.5, 0, 1)
    body = _soft(half_w - L, px)
    chord = np.sqrt(np.clip(1 - (L / (half_w + 0.03)) ** 2, 0, 1))
    A = body * (0.35 + 0.95 * chord)
    if p.breast > 0:  # computed only on the rows the shadows can reach
        cy, ry = 0.16 + p.breast_drop, 0.25 * p.breast
        rows = np.flatnonzero(np.abs(Y[:, 0] - cy) < ry)
        if rows.size:
            rows = slice(rows[0], rows[-1] + 1)
            A[rows] += body[rows] * _breasts(L, Y[rows], right, p)

    # Lungs and their markings.
    lung_d = _lung_distance(L, Y, dome)
    lung = _soft(lung_d, px)
    air = lung.copy()  # share of each pixel that is aerated lung
    vessels = _vessels(L, Y, right, rng)
    tissue = np.ones_like(lung)  # lung parenchyma present (0 in a pneumothorax)

    if "Pneumothorax" in f:
        # The lung collapses toward an anchor; beyond the pleural line: air, no markings.
        info = f["Pneumothorax"]
        k = info["collapse"]
        side = right if info["side"] == "right" else ~right
        side_dome = right_dome if info["side"] == "right" else left_dome
        ax, ay = (0.2, 0.05) if k < 0.75 else (0.3, side_dome + 0.05)
        collapsed_d = _lung_distance(ax + (L - ax) / k, ay + (Y - ay) / k, side_dome) * k
        gap = side * lung * (1 - _soft(collapsed_d, px))
        tissue = tissue - gap
        line = np.exp(-((collapsed_d / (0.8 * px)) ** 2)) * side * lung
        A = A + 0.25 * line + 0.25 * (1 - k) * side * lung * (1 - gap)

    if "Consolidation" in f:
        # A lobe fills with fluid: mottled, fluffy edges, sharp along a fissure.
        info = f["Consolidation"]
        side = right if info["side"] == "right" else ~right
        lobe = info["lobe"]
        # Irregular, fluffy borders where the lobe meets aerated lung; sharp at a fissure.
        rough = _smooth_noise(rng, size, 6) - 0.5
        if lobe == "right upper lobe":  # sharp below, along the minor fissure
            region = _soft(0.1 * (L - 0.45) ** 2 - 0.02 - Y, px * 1.5)
        elif lobe == "left upper lobe":  # with the lingula, hazier below
            region = _fluffy(0.12 - 0.25 * (L - 0.2) - Y + 0.15 * rough)
        elif "middle" in lobe:  # against the right heart border, minor fissure above
            region = _soft(Y + 0.02, px * 1.5) * _fluffy(0.62 - L - 0.35 * Y + 0.15 * rough)
        else:  # lower lobes: the base, fluffy upper edge
            region = _fluffy(Y - 0.15 + 0.3 * (0.55 - L) + 0.15 * rough)
        mottle = _smooth_noise(rng, size, 16)
        density = (0.45 if info["uncertain"] else 0.95) * (0.5 + 0.5 * mottle)
        fill = side * region * lung * density
        air = air * (1 - fill)
        vessels = vessels * (1 - 0.5 * fill)

    if "Pleural Effusion" in f:
        # Dependent fluid with a meniscus climbing the lateral wall; it fills the
        # costophrenic angle (blunting) and hides the hemidiaphragm.
        info = f["Pleural Effusion"]
        h = info["height"]
        for name in ("right", "left") if info["side"] == "both" else (info["side"],):
            side = right if name == "right" else ~right
            side_dome = right_dome if name == "right" else left_dome
            meniscus = np.clip((L - 0.15) / 0.65, 0, 1) ** 2
            level = side_dome + 0.12 - 1.15 * h - (0.05 + 0.7 * h) * meniscus
            t = np.clip((Y - level) / (0.03 + 0.15 * h), 0, 1)
            fluid = side * lung * t * t * (3 - 2 * t)
            air = air * (1 - fluid)
            vessels = vessels * (1 - fluid)
            A = A + 0.15 * fluid

    # Heart (a tilted ellipse, apex to the patient's left) and mediastinum in front of the
    # lungs: they hide the air behind them.
    ctr = study_ctr(study)
    heart_w = ctr * THORACIC_WIDTH
    cos_t, sin_t = math.cos(0.5), math.sin(0.5)
    ha, hb = 1.0, 0.72  # semi-axes ratio; scaled so the horizontal extent is heart_w
    scale = heart_w / 2 / math.sqrt((ha * cos_t) ** 2 + (hb * sin_t) ** 2)
    hx, hy = heart_w / 6.0, 0.2 + 0.1 * (ctr - 0.45)
    u = ((X - hx) * cos_t + (Y - hy) * sin_t) / (ha * scale)
    v = (-(X - hx) * sin_t + (Y - hy) * cos_t) / (hb * scale)
    radius = np.sqrt(u * u + v * v)
    heart = _soft((1 - radius) * hb * scale, px)
    depth = np.sqrt(np.maximum(1 - radius * radius, 0))  # thicker in the middle
    med_w = 0.1 + 0.03 * np.clip(Y1 + 0.3, 0, 1)
    mediastinum = _soft(med_w - np.abs(X - 0.01), px) * _soft(0.35 - Y, px)
    # The aorta unfolds with age: a larger, more lateral knob, a bulging ascending aorta.
    a = p.aorta
    kx, ky, kr = 0.1 + 0.035 * a, -0.33 - 0.02 * a, 0.075 * (1 + 0.3 * a)
    knob_r = np.hypot((X - kx) / kr, (Y - ky) / (0.09 * (1 + 0.15 * a)))
    knob = _soft((1 - knob_r) * kr, px)
    ascending = _soft(
        (1 - np.hypot((X + 0.06 + 0.02 * a) / (0.04 + 0.05 * a), (Y + 0.12) / 0.14)) * 0.04, px
    )
    central = np.maximum(np.maximum(np.maximum(heart, mediastinum), knob), ascending)
    air = air * (1 - 0.9 * central)
    vessels = vessels * (1 - 0.8 * central)
    above = _soft(_dome_y(L, dome) + 0.03 - Y, 3 * px)  # the heart sits on the diaphragm
    A = A + (0.08 * central + 0.12 * depth) * above + (0.06 * a) * knob
    if a * p.cartilage > 0.05:  # a calcified rim along the top of an old knob
        rows = slice(*np.searchsorted(Y[:, 0], (ky - 0.12, ky)))  # Y grows down the image
        rim = np.exp(-(((knob_r[rows] - 1.0) / 0.07) ** 2)) * np.clip(-(Y[rows] - ky) / 0.06, 0, 1)
        A[rows] += (0.3 * a * p.cartilage) * rim

    # Trachea: an air column in the mediastinum down to the carina.
    trachea = _soft(0.028 - np.abs(X - 0.0), px) * _soft(-0.3 - Y, px)
    A = A - 0.45 * trachea

    # Gastric bubble under the left hemidiaphragm (hidden by a left effusion's fluid).
    bubble = _soft(1 - np.hypot((X - 0.38) / 0.13, (Y - left_dome - 0.14) / 0.055), 0.2)
    A = A - 0.45 * bubble

    # Bones: spine, posterior and anterior ribs, clavicles.
    spine = _soft(0.065 - L, px) * (0.8 + 0.2 * np.cos(2 * math.pi * (Y1 / 0.095)))
    rib_p = (Y + 0.66 + 0.12 * L - 0.55 * L * L) / p.rib_spacing
    frac = rib_p - np.floor(rib_p)
    band = np.abs(frac - 0.28)
    ribs = _soft(0.17 - band, 1.2 * px / p.rib_spacing) + 0.6 * _soft(
        0.04 - np.abs(band - 0.15), 1.2 * px / p.rib_spacing
    )
    chest = _soft(LUNG_L + LUNG_A + 0.05 - L, px) * _soft(L - 0.06, px)
    ribs = ribs * (rib_p > 0) * (rib_p < 10) * chest
    ant_p = (Y + 0.62 - 0.45 * (0.85 - L)) / (p.rib_spacing * 1.3)
    afrac = ant_p - np.floor(ant_p)
    anterior = _soft(0.12 - np.abs(afrac - 0.5), 3 * px) * (ant_p > 0) * (ant_p < 5)
    anterior = anterior * _soft(L - 0.3, 6 * px) * chest
    clav_y = -0.56 - 0.42 * (L - 0.08) + 0.3 * (L - 0.08) ** 2 - (0.05 if ap else 0.0)
    clavicle = _soft(0.034 - np.abs(Y - clav_y), px) * _soft(0.72 - L, px) * _soft(L - 0.07, px)
    bone = p.bone_density  # thinner bone with age: fainter ribs and clavicles
    A = A + (0.25 * (0.5 + 0.5 * bone)) * spine + bone * (0.09 * ribs + 0.05 * anterior)
    A = A + (0.5 * bone) * clavicle
    if p.cartilage > 0.02:  # computed only on the columns of the cartilages
        cols = np.flatnonzero((L[0] > 0.12) & (L[0] < 0.34))
        flecks = _cartilage(L[:, cols], ant_p[:, cols], afrac[:, cols], p)
        A[:, cols] += (0.3 * p.cartilage) * flecks * chest[:, cols]

    # Lung air darkens; vessels and parenchyma put back a little density.
    A = A - 0.95 * air + (0.16 * tissue + 0.45 * vessels * tissue) * lung

    if "Support Devices" in f:
        A = A + _devices(f["Support Devices"], study, size, X, Y, px)

    img = np.exp(np.float32(-0.95 * study.contrast) * np.maximum(_blur(A), 0))
    img = img + np.float32(study.noise) * rng.standard_normal(img.shape, dtype=np.float32)
    # film density is 1 - transmitted share; the exposure curve is a lookup table
    levels = len(_exposure_lut(study.exposure)) - 1
    index = np.clip((1 - img) * levels + 0.5, 0, levels).astype(np.intp)
    return _exposure_lut(study.exposure)[index]


@functools.lru_cache(maxsize=4096)
def _exposure_lut(exposure: float) -> np.ndarray:
    """uint8 display values for 1024 film densities under an exposure (gamma) curve."""
    return (np.linspace(0, 1, 1024) ** exposure * 255 + 0.5).astype(np.uint8)


def _devices(info: dict, study: Study, size: int, X, Y, px: float) -> np.ndarray:
    """Radio-opaque tubes and lines as attenuation (splatted points, blurred later)."""
    p = study.patient
    sx, sy = p.body_width * study.zoom, p.body_height * study.zoom
    wire = np.zeros((size, size), dtype=np.float32)
    extra = np.zeros((size, size), dtype=np.float32)

    def path(points, weight):
        pts = [(x * sx + study.shift_x, y * sy + study.shift_y) for x, y in points]
        xs, ys = _curve(pts, size)
        _splat(wire, xs, ys, weight)

    for device in info["devices"]:
        if device == "endotracheal tube":
            # a radio-opaque stripe along the tube, its walls fainter, tip above the carina
            path([(0.0, -1.05), (0.0, -0.42)], 1.6)
            for off in (-0.02, 0.02):
                path([(off, -1.05), (off, -0.42)], 0.5)
        elif device == "enteric tube":
            path([(0.02, -1.05), (0.03, -0.3), (0.06, 0.3), (0.2, 0.58), (0.38, 0.64)], 1.0)
        elif device == "central venous catheter":
            s = -1 if info["line_side"] == "right" else 1
            path([(s * 0.8, -0.6), (s * 0.4, -0.64), (s * 0.12, -0.5), (-0.05, -0.15)], 1.0)
        else:  # pacemaker: a generator box in the left chest wall, leads into the heart
            cx, cy = 0.55, -0.56
            box = _soft(0.07 - np.maximum(np.abs(X - cx) / 1.3, np.abs(Y - cy)), px)
            extra += 2.5 * box
            for end in ((-0.02, 0.22), (0.06, 0.36)):
                path([(cx, cy), (0.3, -0.6), (0.0, -0.35), end], 1.0)
    return extra + np.minimum(wire * (128.0 / size), 1.2)
