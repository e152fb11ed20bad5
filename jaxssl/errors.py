"""Errors a user can fix: the entry points print their one line and exit 1, with no traceback.

Every other exception is a bug or a failure the user cannot act on from the message alone, so
`jaxssl-train` and `jaxssl-eval` let it through with its traceback (config_lib.run_app).
A `UserError` message is one line naming what is wrong and what to change. Each subclass also
derives from the built-in type that code raised there before (ValueError, FileNotFoundError), so
callers that catch those keep working.
"""


class UserError(Exception):
  """A mistake in the user's input; `kind` prefixes the printed line (`config error: ...`)."""

  kind = "error"


class ConfigError(UserError, ValueError):
  """A config the trainer or eval job cannot run: unknown key or method, bad value."""

  kind = "config error"


class WorkdirError(UserError, ValueError):
  """The workdir cannot take this run: another run's config, or an unreadable record."""

  kind = "workdir error"


class DataError(UserError, ValueError):
  """An unknown or unprepared dataset."""

  kind = "data error"


class MissingDataError(DataError, FileNotFoundError):
  """A dataset's files are not installed; the message names the package that brings them."""


class CheckpointError(UserError, ValueError):
  """Checkpoints that cannot serve this run: another model's arrays, or none readable."""

  kind = "checkpoint error"
