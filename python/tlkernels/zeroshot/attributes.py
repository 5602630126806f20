"""A class-attribute table for the 10 handwritten digits (the side information of zero-shot
learning: which class has which attributes, written down by hand, Lampert 2019).

Each attribute is a binary property a person reads off the glyph as it is written in
scikit-learn's 8x8 digits (looked at on the class-mean images: the 7s there are mostly written
with a crossbar, the 9s with a tail that hooks left at the bottom, the 4s open at the top with a
slanted left arm).

=====  ===========  ==========  ==========  ========  =======  ==========  ==========  ========  =========  ============  ============  ===============
digit  closed_loop  hole_upper  hole_lower  vertical  top_bar  middle_bar  bottom_bar  diagonal  round_top  round_bottom  lr_symmetric  centre_junction
=====  ===========  ==========  ==========  ========  =======  ==========  ==========  ========  =========  ============  ============  ===============
0      1            1           1           0         0        0           0           0         1          1             1             0
1      0            0           0           1         0        0           0           0         0          0             1             0
2      0            0           0           0         0        0           1           1         1          0             0             0
3      0            0           0           0         0        0           0           0         1          1             0             1
4      0            0           0           1         0        1           0           1         0          0             0             1
5      0            0           0           0         1        0           0           0         0          1             0             0
6      1            0           1           0         0        0           0           0         0          1             0             0
7      0            0           0           0         1        1           0           1         0          0             0             1
8      1            1           1           0         0        0           0           0         1          1             1             1
9      1            1           0           1         0        0           0           0         1          1             0             0
=====  ===========  ==========  ==========  ========  =======  ==========  ==========  ========  =========  ============  ============  ===============

Meaning of the columns:

- closed_loop: the ink encloses at least one hole.
- hole_upper / hole_lower: a hole lies (at least partly) in the upper / lower half of the glyph.
- vertical (vertical_stroke): a long straight vertical stroke (1, the right stem of 4, the tail of 9).
- top_bar / middle_bar / bottom_bar: a straight horizontal bar at the top (5, 7), across the
  middle (4, the crossbar of 7) or along the bottom (2).
- diagonal (diagonal_stroke): a long straight slanted stroke (the stem of 2 and 7, the arm of 4).
- round_top / round_bottom: the top / bottom of the glyph is a curved stroke (a cap, bowl or hook).
- lr_symmetric: roughly mirror-symmetric about the vertical axis (0, 1, 8).
- centre_junction: strokes cross or meet near the centre (the prong of 3, the crossings of 4, 7, 8).

Every attribute is present in at least one of the digits 0-6 and absent in another, so all of
them can be learnt from seen classes 0-6; the rows of 7, 8 and 9 differ from each other and from
every row of 0-6 (8 and 0 differ only in centre_junction).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ATTRIBUTE_NAMES", "DIGIT_ATTRIBUTES"]

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "closed_loop",
    "hole_upper",
    "hole_lower",
    "vertical_stroke",
    "top_bar",
    "middle_bar",
    "bottom_bar",
    "diagonal_stroke",
    "round_top",
    "round_bottom",
    "lr_symmetric",
    "centre_junction",
)

#: (10, 12) bool: DIGIT_ATTRIBUTES[d, m] is True when digit d has attribute ATTRIBUTE_NAMES[m].
DIGIT_ATTRIBUTES: np.ndarray = np.array(
    [
        # loop up  low  vert top  mid  bot  diag rtop rbot sym  junc
        [1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0],  # 0
        [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0],  # 1
        [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0],  # 2
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1],  # 3
        [0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 1],  # 4
        [0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0],  # 5
        [1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0],  # 6
        [0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1],  # 7
        [1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1],  # 8
        [1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0],  # 9
    ],
    dtype=bool,
)
DIGIT_ATTRIBUTES.setflags(write=False)
