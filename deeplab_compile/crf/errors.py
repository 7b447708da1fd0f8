"""Errors a user can cause when running the dense CRF."""
from ..errors import DeepLabError


class CRFError(DeepLabError):
    """Bad CRF input or parameters; the message names the offending argument."""
