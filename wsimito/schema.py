"""The columns of every table wsimito writes or reads, in their order, declared here once.

Coordinates are level-0 pixels of the image as QuPath shows it. This module imports nothing, so any module
(``merge-reports`` on a login node included) can use it without loading more.
"""

# A slide's detections: rows of a float64 array in memory and the ``detections`` array of its Zarr store
# (centre, score, box).
DETECTION_COLUMNS = ("x", "y", "score", "x0", "y0", "x1", "y1")

# ``detect``'s counts.csv: one row per slide (a failed slide has its status, error, path and the run's settings).
# status: ok | partial (tiles that could not be read: ``unread_tiles`` of them, ``unread_mm2`` of tissue not
# examined; ``tissue_mm2``, the density and the hotspot cover the examined tissue only) | no-tissue | error.
COUNTS_CSV_COLUMNS = [
    "slide", "status", "mitoses", "tissue_mm2", "unread_tiles", "unread_mm2", "mitoses_per_mm2", "mpp",
    "mpp_source", "threshold", "runtime_s", "error", "hotspot_count", "hotspot_per_mm2", "hotspot_mm2",
    "hotspot_shape", "hotspot_x", "hotspot_y", "hotspot_fits", "hotspot_note", "mitoses_per_10_hpf",
    "field_diameter_mm", "mitotic_score", "tiles", "model_sha256", "path",
]

# ``detect``'s detections.csv: one row per detection at or above the threshold, slide by slide.
DETECTIONS_CSV_COLUMNS = ["slide", *DETECTION_COLUMNS]

# The boxes CSV ``make-boxes`` writes and ``train-det --boxes`` reads (labels.read_boxes_csv): one row per
# labelled mitosis, its point and its box in the image's pixels, and how the box was made.
BOXES_CSV_COLUMNS = ["image", "x", "y", "x0", "y0", "x1", "y1", "source"]
