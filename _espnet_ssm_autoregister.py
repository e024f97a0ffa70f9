"""Start-up hook that registers espnet-ssm's classes when ESPnet's task modules are imported.

Installing the package puts ``espnet_ssm_autoregister.pth`` into site-packages. Its single line
calls :func:`install` at interpreter start-up (unless ``ESPNET_SSM_AUTOREGISTER`` is ``0``,
``false``, ``no`` or ``off``), which only puts a finder at the front of ``sys.meta_path``. Nothing
else happens until a module named in :data:`TRIGGER_MODULES` (``espnet2.tasks.asr`` and the other
task modules whose encoder registries we fill) is imported: once it has finished executing, the
hook runs ``import espnet_ssm``, whose import registers everything the package provides. So
ESPnet's own entry points (``python -m espnet2.bin.asr_train``, ``asr_inference``, ``pack``,
``launch``), the DDP workers they start and ``Speech2Text`` know our encoders without any code on
the user's side, while processes that never import ESPnet pay for one tiny stdlib-only module.

This module must stay importable at start-up at no cost: standard library only (no torch, no
ESPnet, not even ``typing``), and it must not import the ``espnet_ssm`` package, whose
``__init__`` imports ESPnet.
"""
# No ``from __future__ import annotations``: it would import the ``__future__`` module at start-up
# (~0.2 ms); annotations that need it are strings instead.
import os
import sys

#: Environment variable that switches the hook off (checked at start-up and again when it fires).
ENV_VAR = "ESPNET_SSM_AUTOREGISTER"
_OFF_VALUES = ("0", "false", "no", "off")

#: ESPnet modules whose import triggers the registration: the task modules of
#: ``espnet_ssm.registry.ENCODER_REGISTRIES`` and ``MODEL_REGISTRIES`` (a test keeps them in step).
TRIGGER_MODULES = frozenset(
    {
        "espnet2.tasks.asr",
        "espnet2.tasks.st",
        "espnet2.tasks.s2t",
        "espnet2.tasks.slu",
        "espnet2.tasks.enh_s2t",
    }
)

#: The package imported to register; a module attribute so that tests can point it elsewhere.
REGISTERING_PACKAGE = "espnet_ssm"


def enabled(environ: "dict[str, str] | None" = None) -> bool:
    """Whether automatic registration is switched on (``ESPNET_SSM_AUTOREGISTER`` not off)."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "1")
    return value.strip().lower() not in _OFF_VALUES


class _RegisteringLoader:
    """Wraps the real loader of a trigger module; registers once the module has executed."""

    def __init__(self, loader: object, finder: "AutoRegisterFinder") -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: object) -> object:
        return self._loader.create_module(spec)

    def exec_module(self, module: object) -> None:
        finder = self._finder
        finder.executing += 1
        try:
            self._loader.exec_module(module)
        finally:
            finder.executing -= 1
            # Hand the module its real loader back, so that it looks exactly as without us
            # (inspect, linecache, importlib.resources and reloads use ``__loader__``).
            module.__loader__ = self._loader
            spec = getattr(module, "__spec__", None)
            if spec is not None and spec.loader is self:
                spec.loader = self._loader
        # Only when no trigger module is half-executed: ``espnet2.tasks.enh_s2t`` imports
        # ``espnet2.tasks.asr`` first and copies its registry afterwards, and registering while
        # enh_s2t is half-imported would miss that copy.
        if finder.executing == 0:
            finder.register()

    def __getattr__(self, name: str) -> object:
        # get_source, get_filename, is_package, get_resource_reader, ...: the real loader's.
        return getattr(self._loader, name)


class AutoRegisterFinder:
    """``sys.meta_path`` finder that wraps the loaders of :data:`TRIGGER_MODULES` only.

    Every other import costs one set look-up. Finding the trigger module itself is delegated to
    the finders behind this one, so the module is loaded exactly as it would be without us.
    """

    def __init__(self) -> None:
        self.executing = 0  # trigger modules currently executing (nested imports)
        self.done = False  # registration succeeded or failed for good: never try again
        self._registering = False
        self._searching: "set[str]" = set()

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        """Return the spec the other finders give, with a registering loader for triggers."""
        if fullname not in TRIGGER_MODULES or fullname in self._searching or self.done:
            return None
        self._searching.add(fullname)  # a finder behind us may call importlib.util.find_spec
        try:
            spec = None
            for finder in sys.meta_path:
                find_spec = getattr(finder, "find_spec", None)
                if finder is self or find_spec is None:
                    continue
                spec = find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._searching.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _RegisteringLoader(spec.loader, self)
        return spec

    def register(self) -> None:
        """Import the package (which registers); never raises into ESPnet's import."""
        if self.done or self._registering or not enabled():
            return
        if REGISTERING_PACKAGE in sys.modules:
            # Already imported, or being imported right now (its registration imports the
            # trigger modules itself and fills them in): nothing to add.
            self.done = True
            return
        self._registering = True
        try:
            __import__(REGISTERING_PACKAGE)
        except Exception as e:  # noqa: BLE001 -- ESPnet must keep working without our encoders
            import warnings

            warnings.warn(
                f"espnet-ssm could not register its encoders in ESPnet ({type(e).__name__}: {e}); "
                f"set {ENV_VAR}=0 to switch the automatic registration off",
                RuntimeWarning,
                stacklevel=2,
            )
        finally:
            self._registering = False
        self.done = True
        uninstall()  # nothing left to do: later imports do not even pay the set look-up


def installed() -> "AutoRegisterFinder | None":
    """The finder on ``sys.meta_path``, if there is one."""
    for finder in sys.meta_path:
        if isinstance(finder, AutoRegisterFinder):
            return finder
    return None


def install() -> bool:
    """Arm the hook (idempotent); return True when a finder was added now.

    Does nothing when ``ESPNET_SSM_AUTOREGISTER`` is off. If a trigger module was imported before
    (possible only when this is called late, not from the ``.pth`` file), registers right away.
    """
    if not enabled() or installed() is not None:
        return False
    finder = AutoRegisterFinder()
    sys.meta_path.insert(0, finder)
    if any(_fully_imported(name) for name in TRIGGER_MODULES):
        finder.register()
    return True


def _fully_imported(name: str) -> bool:
    """Whether module ``name`` is in ``sys.modules`` and has finished executing."""
    spec = getattr(sys.modules.get(name), "__spec__", None)
    # importlib sets ``_initializing`` while the module executes and clears it afterwards.
    return spec is not None and not getattr(spec, "_initializing", False)


def uninstall() -> None:
    """Take the finder off ``sys.meta_path`` (registrations already made stay)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, AutoRegisterFinder)]
