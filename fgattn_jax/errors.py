"""Errors that mean a wrong setting, not a bug: every layer raises them and the commands show them as one line
(cli.user_errors). Here, below everything, so that models, schemes and training need not import the command-line
config loader (config.py) for them."""


class ConfigError(ValueError):
  """A config file, preset, key or value that cannot be used; the message says what to do instead."""
