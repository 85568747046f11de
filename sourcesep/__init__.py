"""sourcesep: query-by-example audio source separation.

    from sourcesep import Separator
    result = Separator(model="none").separate("mix.wav", "query.wav")
    result.write("out/")
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .errors import InputError, ModelError, ParamError, SourcesepError
from .params import DEFAULT_MODEL, Params, RuntimeOptions
from .types import Classification, Detection, MaskResult, Segment

if TYPE_CHECKING:
    from .separator import Result, Separator


def __getattr__(name: str) -> Any:
    # Separator (and with it torch) is imported on first use: the commands set OpenMP's spin
    # limit before torch starts (sourcesep/openmp.py), and `sourcesep params` needs no torch.
    if name in ("Result", "Separator"):
        from . import separator

        return getattr(separator, name)
    raise AttributeError(f"module 'sourcesep' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

__all__ = [
    "DEFAULT_MODEL",
    "Classification",
    "Detection",
    "InputError",
    "MaskResult",
    "ModelError",
    "ParamError",
    "Params",
    "Result",
    "RuntimeOptions",
    "Segment",
    "Separator",
    "SourcesepError",
    "__version__",
]
