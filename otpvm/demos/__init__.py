"""Demonstrations run by ``python -m otpvm``."""
