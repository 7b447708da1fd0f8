// The Python module ``deeplab_compile._C``.  It holds no Python functions: the
// ops register themselves with the dispatcher (TORCH_LIBRARY blocks in
// csrc/ops/ and csrc/{cpu,cuda}/) when the shared library is loaded.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "deeplab_compile custom ops (see torch.ops.deeplab)", -1, nullptr,
  };
  return PyModule_Create(&module_def);
}
}
