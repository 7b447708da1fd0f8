"""The netdef language, the lowest step of the compiler: text in, a plain document out.

``nodes`` (Map, Seq and their source positions), ``parse`` (YAML only, strict, one-line
errors; ``dump`` writes a document back), ``expr`` (``${...}`` expressions), ``expand``
(include, templates, repeat, variables, phase filtering) and ``errors``.  This package
imports nothing from ``caffe/``, ``layers/``, training or the command-line tools: the
Caffe importer builds the same nodes, and the compiler's loader
(:func:`deeplab_compile.compiler.load`) picks YAML or prototxt by suffix.
"""
