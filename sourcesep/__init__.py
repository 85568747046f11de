"""sourcesep: query-by-example audio source separation.

    from sourcesep import Separator
    result = Separator(model="none").separate("mix.wav", "query.wav")
    result.write("out/")
"""

__version__ = "0.1.0"

from .errors import InputError, ModelError, ParamError, SourcesepError
from .params import DEFAULT_MODEL, Params, RuntimeOptions
from .separator import Result, Separator
from .types import Classification, Detection, MaskResult, Segment

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
