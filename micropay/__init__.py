"""micropay: Ethereum micropayments with payment channels, streams and an HTTP 402 paywall.

The few names most programs need are here; each module holds the rest of its topic
(``micropay.channels``, ``micropay.streams``, ``micropay.ledger``, ``micropay.paywall``…).
Everything in ``micropay._*`` is private.
"""

__version__ = "0.1.0"

from micropay._artifacts import ContractArtifact, artifact_names, load_artifact
from micropay.channels import ChannelClient, ChannelState
from micropay.deployments import Deployment, deploy
from micropay.errors import ArtifactError, MicropayError
from micropay.networks import connect
from micropay.payee import Payee
from micropay.payer import Payer
from micropay.streams import FixedStreamConfig, OpenStreamConfig, StreamsClient
from micropay.vouchers import (
    ChannelConfig,
    PayeeClaim,
    Voucher,
    VoucherDomain,
    sign_payee_claim,
    sign_voucher,
)

__all__ = [
    "ArtifactError",
    "ChannelClient",
    "ChannelConfig",
    "ChannelState",
    "ContractArtifact",
    "Deployment",
    "FixedStreamConfig",
    "MicropayError",
    "OpenStreamConfig",
    "Payee",
    "PayeeClaim",
    "Payer",
    "StreamsClient",
    "Voucher",
    "VoucherDomain",
    "__version__",
    "artifact_names",
    "connect",
    "deploy",
    "load_artifact",
    "sign_payee_claim",
    "sign_voucher",
]
