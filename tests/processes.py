"""Process state read from Linux /proc, for tests that check nothing is left running."""


def alive(pid: int) -> bool:
  """False once the process is gone or a zombie (an orphan's new parent may never reap it)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False
