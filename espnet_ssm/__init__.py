"""espnet-ssm: state space model encoders for ESPnet speech recognition.

Importing this package registers our encoders (``mh_ssm``, ``stateformer``, ``speech_mamba``,
``ssm_conformer``) in ESPnet's encoder registries, our Mamba decoder (``mamba``) in its ASR
decoder registry and our transducer model (``espnet_ssm_transducer``) in its ASR model registry,
so that ``encoder: <name>``, ``decoder: <name>`` and ``model: <name>`` in a training YAML,
``Speech2Text`` and ``build_model_from_file`` find them::

    import espnet_ssm  # noqa: F401  (registers the encoders)
    from espnet2.bin.asr_inference import Speech2Text
"""
import contextlib
import sys

# ESPnet prints notices (e.g. about optional flash-attn) on stdout while it is imported; send them
# to stderr so that the stdout of our command-line tools carries only their output.
with contextlib.redirect_stdout(sys.stderr):
    from espnet_ssm.registry import (
        our_decoders,
        our_encoders,
        our_models,
        register_decoders,
        register_encoders,
        register_models,
    )

    register_encoders(our_encoders())
    register_decoders(our_decoders())
    register_models(our_models())

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "register_encoders",
    "our_encoders",
    "register_decoders",
    "our_decoders",
    "register_models",
    "our_models",
]
