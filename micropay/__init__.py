"""micropay: Ethereum micropayments with payment channels, streams and an HTTP 402 paywall.

The public surface is what ``__all__`` lists; everything in ``micropay._*`` is private.
"""

from micropay._artifacts import ContractArtifact, artifact_names, load_artifact
from micropay.errors import ArtifactError, MicropayError

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "ContractArtifact",
    "MicropayError",
    "__version__",
    "artifact_names",
    "load_artifact",
]
