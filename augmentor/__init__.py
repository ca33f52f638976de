"""Augmentor: the generator side of cxraug (import from the submodules; nothing heavy here).

Base models (`augmentor.base`, with `tiny`'s pretrained autoencoder in `pretrained/`),
fine-tuning (`augmentor.finetune` and the modules it calls), the generator folder
(`augmentor.generator`), balanced synthesis and the synthetic set (`augmentor.synthesize`,
`augmentor.synthetic_set`), and the generator's evaluation (`augmentor.evaluate`, its folder
`augmentor.eval_folder`, its settings `augmentor.eval_config`). docs/architecture.md maps
every module.
"""
