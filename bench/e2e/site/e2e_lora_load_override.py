"""Let sglang 0.5.12 load LoRA adapters from disk under load_format="dummy".

LoRAAdapter reuses the server's LoadConfig to read its safetensors, and the
dummy format refuses to read files ("DUMMY load_format should use
DummyModelLoader and not call _prepare_weights"). This gives each adapter
LoadConfig(load_format=AUTO) instead; the base model stays on dummy weights.
It is installed by sitecustomize.py beside it in every process (the
engine spawns its scheduler), identically for the pin and the patched tree,
and changes neither tree.
"""

import functools
import importlib.abc
import sys

TARGET = "sglang.srt.lora.lora"


def _patch(module):
    from sglang.srt.configs.load_config import LoadConfig, LoadFormat

    init = module.LoRAAdapter.__init__

    @functools.wraps(init)
    def __init__(self, uid, config, base_hf_config, load_config, *args, **kwargs):
        if load_config.load_format == LoadFormat.DUMMY:
            load_config = LoadConfig(load_format=LoadFormat.AUTO)
        init(self, uid, config, base_hf_config, load_config, *args, **kwargs)

    module.LoRAAdapter.__init__ = __init__


class _Finder(importlib.abc.MetaPathFinder):
    """Patches TARGET right after Python executes it, whoever imports it first."""

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def install():
    if TARGET in sys.modules:
        _patch(sys.modules[TARGET])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
