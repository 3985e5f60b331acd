"""The ground floor every stage stands on: image I/O (``imageio``), JSON and atomic writes, seeds
and hashing (``utils``), the one input-error type (``errors``), the ICBM152 template (``template``),
device allocation (``devices``), the leakage-guarded reader of ``results/splits.json`` (``splits``),
scan-to-subject aggregation (``subjects``) and the import graph behind each rule's code inputs
(``codegraph``). It reads only what it is handed and writes nothing on its own; it imports no other
mripipe package.
"""
