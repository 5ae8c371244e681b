"""The one exception type users see.

Anything the user can fix (a missing file, a raster without georeference, a model for the wrong
number of bands) is raised as :class:`MomoGeoError` with a message that fits on one line. The CLI
and the QGIS plugin print that line and exit non-zero; they never show a traceback for it.
"""


class MomoGeoError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
