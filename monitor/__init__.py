"""Call Conduct Monitor: offline speech quality monitoring for Chinese service calls.

The pipeline, one module per stage: audio → asr → match → rules → report / alerts / web.
"""

__version__ = "0.1.0"
