"""Input checks shared by the losses: fail with a message naming the problem and the fix."""


def check_paired(name_a, a, name_b, b, *, needs: str) -> None:
  """`a` and `b` must be [batch, dim] of equal shape with batch >= 2.

  `needs` says why two examples are the minimum (e.g. "negatives", "batch statistics").
  """
  if a.ndim != 2 or a.shape != b.shape:
    raise ValueError(
      f"{name_a} and {name_b} must both be [batch, dim] with the same shape; "
      f"got {name_a}.shape={a.shape} and {name_b}.shape={b.shape}. Flatten "
      "any extra axes and pair the two views row by row."
    )
  if a.shape[0] < 2:
    raise ValueError(
      f"{needs} need at least 2 examples; got a batch of {a.shape[0]}. Increase the batch size."
    )
