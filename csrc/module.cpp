// The Python module ``deeplab_compile._C``.  The ops register themselves with the
// dispatcher (TORCH_LIBRARY blocks in csrc/ops/ and csrc/{cpu,cuda}/) when the shared
// library is loaded; the module itself has one function, cpu_paths(), which reports
// the CPU code paths the kernels choose at run time (deeplab-compile --info).
#include <Python.h>

namespace deeplab {
const char* crf_storage_kind() noexcept;
const char* aspp_cpu_forward_kind() noexcept;
}  // namespace deeplab

namespace {
PyObject* cpu_paths(PyObject*, PyObject*) {
  return Py_BuildValue("{s:s,s:s}", "crf_storage", deeplab::crf_storage_kind(), "aspp_sum_forward",
                       deeplab::aspp_cpu_forward_kind());
}

PyMethodDef methods[] = {
    {"cpu_paths", cpu_paths, METH_NOARGS,
     "cpu_paths() -> dict: the CPU code paths the kernels take now ('crf_storage': 'half' or 'float32', "
     "'aspp_sum_forward': 'direct' or 'gemm'; 'invalid' where the environment variable is bad)."},
    {nullptr, nullptr, 0, nullptr},
};
}  // namespace

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "deeplab_compile custom ops (see torch.ops.deeplab)", -1, methods,
  };
  return PyModule_Create(&module_def);
}
}
