"""Channel dependency analysis and the widen rewrite (Mode 2); imports nothing, registers nothing.

- ``edits``: the edits widening needs, as data (ConstEdit, IntEdit, Count, Perm, AxisMap, ...);
- ``state``: the Walk state the channel rules read and write, on one GraphIndex;
- ``rules_channel``, ``rules_axes``, ``rules_reshape``: one channel rule per op type, each module
  with its own registry;
- ``walk``: merges the rule tables explicitly and runs them over the main graph;
- ``analysis``: channel spaces, widths under a scale factor, parameter counts, ``solve_scale``;
- ``rewrite``: ``run_widen``, the widened copy of a model;
- ``report``: ``channel_report``, the library entry of ``onnx-sk analyze --channels``.
"""
