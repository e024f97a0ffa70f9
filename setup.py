"""espnet-ssm: state space model encoders for ESPnet speech recognition."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

setup(
    name="espnet-ssm",
    version="0.1.0",
    description="State space model (S4D, MH-SSM, Mamba) encoders for ESPnet ASR",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["espnet_ssm", "espnet_ssm.*"]),
    python_requires=">=3.9",
    # Loose on purpose: users bring their own (CUDA) torch. The tested, pinned set lives in
    # constraints.txt and is what `make test` / `make demo` install.
    install_requires=[
        "espnet>=202402",
        "torch>=2.1",
        "torchaudio",
        "sentencepiece",
        "pyyaml",
        "jiwer",
        "soundfile",
    ],
    extras_require={"test": ["pytest"], "train": ["tensorboard"]},
    entry_points={
        "console_scripts": [
            "espnet-ssm-asr-train=espnet_ssm.bin.asr_train:main",
            "espnet-ssm-asr-inference=espnet_ssm.bin.asr_inference:main",
            "espnet-ssm-asr-inference-streaming=espnet_ssm.bin.asr_inference_streaming:main",
            "espnet-ssm-asr-inference-longform=espnet_ssm.bin.asr_inference_longform:main",
            "espnet-ssm-pack=espnet_ssm.bin.pack:main",
            "espnet-ssm-describe-encoder=espnet_ssm.bin.describe_encoder:main",
        ]
    },
)
