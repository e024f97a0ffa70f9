"""espnet-ssm: state space model encoders for ESPnet speech recognition."""
import os
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

here = Path(__file__).parent

# The start-up line that makes ESPnet's own entry points know our encoders: it only arms an import
# hook (see _espnet_ssm_autoregister.py), imports nothing when ESPNET_SSM_AUTOREGISTER is off, and
# never imports torch or ESPnet. The file name sorts after setuptools' "__editable__.*.pth", whose
# finder makes the hook module importable in an editable install.
PTH_NAME = "espnet_ssm_autoregister.pth"
PTH_LINE = (
    "import os; os.environ.get('ESPNET_SSM_AUTOREGISTER', '1').strip().lower() in "
    "('0', 'false', 'no', 'off') or __import__('_espnet_ssm_autoregister').install()\n"
)


def _write_pth(directory: str) -> str:
    """Write the start-up file into ``directory`` (a wheel's root); return its path."""
    path = os.path.join(directory, PTH_NAME)
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(PTH_LINE)
    return path


class BuildPyWithPth(build_py):
    """build_py that also puts the start-up .pth file at the root of the wheel (``pip install .``)."""

    def run(self) -> None:
        super().run()
        if not getattr(self, "editable_mode", False):  # editable: see EditableWheelWithPth
            _write_pth(self.build_lib)

    def get_outputs(self, include_bytecode: bool = True) -> list:
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH_NAME))
        return outputs


cmdclass = {"build_py": BuildPyWithPth}

try:  # setuptools >= 64 (PEP 660 editable installs, what `pip install -e .` uses)
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # older setuptools (`setup.py develop`): editable installs go without the hook
    editable_wheel = None

if editable_wheel is not None and hasattr(editable_wheel, "_run_build_commands"):

    class EditableWheelWithPth(editable_wheel):
        """Editable wheel that carries the start-up .pth file too (``pip install -e .``).

        An editable wheel ignores what build_py writes into build_lib; everything at the root of
        the unpacked editable wheel is installed into site-packages and listed in RECORD, so
        ``pip uninstall`` removes it. That directory is handed to ``_run_build_commands``, a
        private method with the same signature in setuptools 65 and 84 (both checked); without
        it, the class is not used and editable installs go without the hook.
        """

        def _run_build_commands(self, dist_name: str, unpacked_wheel, build_lib, tmp_dir) -> tuple:
            result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
            _write_pth(str(unpacked_wheel))
            return result

    cmdclass["editable_wheel"] = EditableWheelWithPth

setup(
    name="espnet-ssm",
    version="0.1.0",
    description="State space model (S4D, MH-SSM, Mamba) encoders for ESPnet ASR",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["espnet_ssm", "espnet_ssm.*"]),
    # the C++ sources of the CPU kernels, compiled on first use (espnet_ssm/ops/cpu_kernels.py)
    package_data={"espnet_ssm.ops": ["csrc/*.cpp"]},
    # The stdlib-only start-up hook, a top-level module so that importing it does not import
    # espnet_ssm/__init__.py (which imports ESPnet).
    py_modules=["_espnet_ssm_autoregister"],
    cmdclass=cmdclass,
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
