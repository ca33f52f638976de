"""Subgroup vocabulary: age groups, sex, balance columns, the report header phrase."""

import math

import pandas as pd
import pytest

from manifests.demographics import (
    age_group_bounds,
    age_group_names,
    age_groups,
    check_balance_columns,
    demographic_phrase,
    parse_age_edges,
    with_subgroups,
)
from manifests.errors import UserError


def test_default_age_groups_are_half_open():
    assert age_group_names() == ["<40", "40-64", "65+"]
    assert list(age_groups([20, 39.9, 40, 64.9, 65, 90, None])) == [
        "<40", "<40", "40-64", "40-64", "65+", "65+", None,
    ]  # fmt: skip
    bounds = age_group_bounds((50,))
    assert bounds["<50"] == (0.0, 50.0) and math.isinf(bounds["50+"][1])


def test_age_edges_parse_and_refuse():
    assert parse_age_edges("30, 60,80") == (30.0, 60.0, 80.0)
    assert parse_age_edges(None) == (40.0, 65.0)
    for bad in ("65,40", "x", "0,10", "", "40,nan", "40,inf"):
        with pytest.raises(UserError, match="--age-groups"):
            parse_age_edges(bad)


def test_subgroup_columns_and_balance_flag():
    rows = with_subgroups(pd.DataFrame({"sex": ["F", "Unknown", None], "age": [30, 70, None]}))
    assert rows["sex"].iloc[0] == "F" and pd.isna(rows["sex"].iloc[1])
    assert list(rows["age_group"].iloc[:2]) == ["<40", "65+"] and pd.isna(rows["age_group"].iloc[2])
    assert check_balance_columns(["sex", "age_group"]) == ("sex", "age_group")
    with pytest.raises(UserError, match="valid: one or both of sex, age_group"):
        check_balance_columns(["race"])


def test_demographic_phrase_is_a_report_header():
    assert demographic_phrase("F", 72.6) == "72-year-old woman."
    assert demographic_phrase("M", None) == "Man."
    assert demographic_phrase(None, None) == ""
