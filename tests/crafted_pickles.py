"""Checkpoint files whose pickle creates a marker file when it is fully unpickled: the attacks that opening
someone else's checkpoint must not run (tests/test_checkpoint_trust.py).

Each payload is written as raw pickle opcodes, the way an attacker would, and wrapped in a real
`torch.save` zip, so it reaches exactly the code that reads checkpoints.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _call(function: bytes, *args: bytes) -> bytes:
    """function(*args): MARK args TUPLE REDUCE."""
    return function + b"(" + b"".join(args) + b"tR"


def _getattr(obj: bytes, name: str) -> bytes:
    return _call(_global("builtins", "getattr"), obj, _text(name))


def payloads(marker: Path) -> dict[str, bytes]:
    """name -> pickle program that creates `marker` when unpickled without restrictions."""
    touch = f"touch {marker}"
    # HistoryBuffer.update.__globals__['warnings'].sys.modules['os'].system(touch): only getattr and a
    # class that mmengine checkpoints need, i.e. what an allow-listed `getattr` would let through
    module_globals = _getattr(_getattr(_global("mmengine.logging.history_buffer", "HistoryBuffer"), "update"),
                              "__globals__")
    warnings_module = _call(_getattr(module_globals, "get"), _text("warnings"))
    os_module = _call(_getattr(_getattr(_getattr(warnings_module, "sys"), "modules"), "get"), _text("os"))
    return {
        "os.system": _call(_global("os", "system"), _text(touch)),
        "subprocess": _call(_global("subprocess", "getoutput"), _text(touch)),
        "exec": _call(_global("builtins", "exec"), _text(f"open({str(marker)!r}, 'w').close()")),
        "getattr chain": _call(_getattr(os_module, "system"), _text(touch)),
    }


def write_torch_file(path: Path, program: bytes) -> Path:
    """A `torch.save` zip whose data.pkl is `program` (protocol 2, ends with STOP)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"placeholder": 1}, path)
    with zipfile.ZipFile(path) as original:
        entries = {info.filename: original.read(info) for info in original.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as crafted:
        for name, data in entries.items():
            crafted.writestr(name, b"\x80\x02" + program + b"." if name.endswith("/data.pkl") else data)
    return path
