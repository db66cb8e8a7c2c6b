"""One exception type for bad user input, so entrypoints can print one clear line and exit."""


class ConfigError(ValueError):
    """Raised for bad input (config, paths, data) before any compute starts.

    The message is a single line that says what is wrong and how to fix it.
    """
