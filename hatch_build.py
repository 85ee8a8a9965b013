"""Build hook: compiles the optional C accelerators in src/pilothouse/_speedups/, one extension per
``*.c`` file, next to their sources. Without a C compiler the build goes on and the package runs their
pure-Python references (the same results; see ``pilothouse._speedups`` for what each one replaces)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SPEEDUPS = Path("src/pilothouse/_speedups")


def compile_extension(source: Path) -> Path | None:
    """Compile ``source`` into an extension module beside it; its path, or None (and why, on stderr)."""
    target = source.with_name(source.stem + str(sysconfig.get_config_var("EXT_SUFFIX")))
    # Compiled and linked in one step with the interpreter's own linker command (LDSHARED:
    # "-shared" on Linux, "-bundle -undefined dynamic_lookup" on macOS).
    linker = sysconfig.get_config_var("LDSHARED") or f"{os.environ.get('CC', 'cc')} -shared"
    flags = sysconfig.get_config_var("CCSHARED") or "-fPIC"
    include = sysconfig.get_paths()["include"]
    command = [*shlex.split(linker), *shlex.split(flags), "-O2", f"-I{include}", str(source)]
    command += ["-o", str(target)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        print(
            f"pilothouse: {source.name} was not built, its Python reference runs: {detail}", file=sys.stderr
        )
        return None
    return target


class SpeedupsHook(BuildHookInterface):  # type: ignore[type-arg]  # generic in newer hatchling
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        sources = sorted((Path(self.root) / SPEEDUPS).glob("*.c"))
        built = [target for source in sources if (target := compile_extension(source)) is not None]
        if not built:
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install imports them from src/
            for target in built:
                build_data["force_include"][str(target)] = f"pilothouse/_speedups/{target.name}"
