# Type stubs of etakit.cykernels (src/etakit/cykernels.pyx).  Its kernels are for Cython
# (`cimport`, see cykernels.pxd); from Python the module only reports its engine's rule table.

def rule_ids() -> dict[str, int]: ...
