#!/usr/bin/env python3
"""Run ``espnet_ssm.recipe.<module>`` as ``__main__`` without importing ``espnet_ssm/__init__``.

Usage: helper.py <module> [args...]     e.g.  helper.py datadir validate data/train

``import espnet_ssm`` registers our encoders and so imports all of ``espnet2.tasks.asr``, which
takes about 15 s per process. The recipe's data/scoring helpers build no model, so this launcher
binds a bare package object to the name ``espnet_ssm`` (same search path, no ``__init__`` run)
before running the helper. Anything that builds a model goes through ``espnet_ssm.bin.*``.
"""
import importlib.util
import runpy
import sys
import types

if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
    sys.exit(__doc__)
spec = importlib.util.find_spec("espnet_ssm")
if spec is None or not spec.submodule_search_locations:
    sys.exit("helper.py: the espnet_ssm package is not installed in this Python (source path.sh?)")
package = types.ModuleType("espnet_ssm")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["espnet_ssm"] = package
module = "espnet_ssm.recipe." + sys.argv[1]
sys.argv = [module] + sys.argv[2:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
