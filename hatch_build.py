"""Build hook: compiles the optional C reader of OTLP/protobuf trace exports
(src/pilothouse/tracing/_otlp_native.c) next to its source. Without a C compiler the build goes on
and the package reads exports through upb alone (the same results, ~2.5x the CPU for that step)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("src/pilothouse/tracing/_otlp_native.c")


class NativeReaderHook(BuildHookInterface):  # type: ignore[type-arg]  # generic in newer hatchling
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        source = Path(self.root) / SOURCE
        target = source.with_name("_otlp_native" + str(sysconfig.get_config_var("EXT_SUFFIX")))
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
            print(f"pilothouse: the C OTLP reader was not built, using upb alone: {detail}", file=sys.stderr)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install imports it from src/
            build_data["force_include"][str(target)] = f"pilothouse/tracing/{target.name}"
