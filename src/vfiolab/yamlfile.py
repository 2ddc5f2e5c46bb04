"""YAML descriptions (platforms, scenarios) read strictly: one error line naming the file and position.

PyYAML's safe loader lets a repeated key silently replace the first one and fails with a traceback on
bytes that are not UTF-8; a description with either is a mistake the user must hear about.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from vfiolab.errors import VfiolabError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML 1.2 requires unique keys)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[object, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue                        # "<<: *anchor" may be given with its own keys
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue                        # an unhashable key: construct_mapping reports it
            if first is not key_node:
                line = first.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first on line {line})", key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | os.PathLike[str], what: str) -> tuple[object, str]:
    """The document in ``path`` and the file name to use in messages; ``what`` says what the file is
    ("platform description") in the error for a file that cannot be read."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise VfiolabError(f"{source}: cannot read {what}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise VfiolabError(f"{source}:{line}: not valid YAML: byte {raw[e.start]:#04x} is not UTF-8") from None
    return parse_yaml(text, source), source


def parse_yaml(text: str, source: str) -> object:
    """One YAML document from ``text``; errors are ``source:line:column: not valid YAML: problem``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except yaml.reader.ReaderError as e:        # a character YAML does not allow (NUL, most controls)
        line = text.count("\n", 0, e.position) + 1
        char = e.character if isinstance(e.character, str) else chr(e.character)
        raise VfiolabError(f"{source}:{line}: not valid YAML: character U+{ord(char):04X} is not allowed") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise VfiolabError(f"{source}{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise VfiolabError(f"{source}: not valid YAML: nested too deeply") from None
