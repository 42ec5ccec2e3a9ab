"""`${NAME}` and `${NAME:-default}` in config and rule files.

Substitution runs on parsed scalars, never on the raw text, so a value from the
environment can never change the structure of the YAML around it. Every value
that came from the environment is reported back: those are secrets and must
never be shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class UnsetVariableError(LookupError):
    """A `${NAME}` without default whose variable is not set."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"environment variable {name} is not set; set it, or write ${{{name}:-default}}")


def substitute(text: str, env: Mapping[str, str], secrets: set[str]) -> str:
    """`text` with every reference replaced; `$$` is a literal `$`.

    Values taken from `env` are added to `secrets` (defaults are not secret:
    they are written in the file for everyone to read).
    """
    if "$" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is not None and (value != "" or default is None):
            if value:
                secrets.add(value)
            return value
        if default is not None:
            return default
        raise UnsetVariableError(name)

    return _REFERENCE.sub(replace, text)
