"""The one exception type whose message is meant for the user.

Everything in lmviz that fails because of what the user asked for (an unknown
model, an empty text, a temperature below zero) raises `LmvizError` with a
message that says what happened and what to do. Pages show it with
`st.error`, the CLI prints it on one line and exits non-zero. Any other
exception is a bug.
"""


class LmvizError(ValueError):
    """A problem with the user's input, explained in plain words."""
