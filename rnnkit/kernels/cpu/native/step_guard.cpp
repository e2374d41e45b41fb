/* The checks of a stream's fast step (rnnkit/nn/native_step.py: fast_step), in C++.
 *
 * At batch 1 a step's C GEMV sweeps the whole of [W_ih | W_hh] (2 MB at H256, an L2's
 * worth), pushing out of cache whatever ran before it. Each of the ~20 tensor getters the
 * Python checks call (dtype, device, shape, contiguity, version, address) is then a walk
 * through code and data fetched back from L3: at H256 on one core they cost more than the
 * arithmetic. Here the same checks read the tensors' fields inline, in a few cache lines.
 *
 * Python API (module rnnkit_step_guard):
 *   guard(sources: tuple[Tensor], dtype_like: Tensor, input_size, hidden_size, layers,
 *         states (1 or 2), max_batch, step_any, consts, inputs, scratch, element_size,
 *         stack_scratch, spare: dict, names: tuple[str]) -> Guard
 *       sources: the weights the step was bound to, as they are now (version, address kept);
 *       step_any: the address of stream_step.h's stream_step_any for the dtype; consts,
 *       inputs: per layer the address of its stream_consts and its input size; scratch:
 *       per number of streams the values a step's scratch needs (on the C stack up to
 *       stack_scratch); spare: (batch, batched, chunk) -> list of outputs made ahead, each
 *       (y or out, h_out, c_out or None, h_out address, c_out address, out address or 0),
 *       taken from the end;
 *       names: each source's name in the layer's _parameters.
 *   Guard.check(x, state) -> None | (batch, batched, x_ptr, h_ptr, c_ptr, threads)
 *       None unless: x an exact torch.Tensor of the bound dtype on the CPU, contiguous,
 *       (B, I) or (I,) with 1 <= B <= max_batch; state an exact Tensor or 1-tuple (one
 *       state) or a tuple of two, each of that dtype on the CPU, contiguous, (L, B, H) or (L, H);
 *       every source unwritten (same version) at the same address; and nothing asks for
 *       a gradient (grad mode off, or no tensor involved requires one), no autocast, no
 *       torch.jit.trace. c_ptr is 0 for one state; threads: torch's intra-op threads.
 *   Guard.step(x, state, params, chunk=0) -> None | Ellipsis | (y, state)
 *       params (the layer's _parameters) holding the very sources under their names,
 *       check, then the whole stack's step on outputs taken from spare[(batch, batched,
 *       chunk)] (Ellipsis: none left; refill and call again); state a tuple (h, c) for
 *       two states, else the tensor. chunk 0: x a step's (B, I) or (I,), y a view of
 *       the last layer's h; 1 (2 batch-first): x a forward's one-step chunk (1, B, I)
 *       ((B, 1, I)) or (1, I), y its output in its own memory. The GIL is released
 *       during the arithmetic. */
#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>
#include <ATen/Parallel.h>
#include <ATen/TracerMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

/* stream_step.h's stream_step_any: one layer's step, whatever its kind */
using StepAny = void (*)(const void* consts, long B, long I, long H, long threads, long sweep, const void* x,
                         const void* h, const void* c, void* h_out, void* c_out, void* work);

struct Guard {
    PyObject_HEAD
    std::vector<at::Tensor>* sources;
    std::vector<int64_t>* versions;
    std::vector<const void*>* addresses;
    c10::ScalarType dtype;
    int64_t input_size, hidden_size, layers, states, max_batch;
    /* the step itself: per layer its constants (stream_consts) and input size; scratch
     * values per number of streams; the outputs made ahead, (batch, batched) -> list */
    StepAny step_any;
    std::vector<const void*>* consts;
    std::vector<long>* inputs;
    std::vector<long>* scratch;
    int64_t element_size, stack_scratch;
    long sweep;
    PyObject* spare;
    PyObject *names, *objects;  /* the weights' attribute names and the Parameters bound */
};

struct Found {
    int64_t batch;
    bool batched;
    const void *x, *h, *c;
};

/* exactly torch.Tensor (THPVariable_CheckExact also takes a Parameter; the Python checks do not) */
bool exact_tensor(PyObject* obj) {
    return Py_TYPE(obj) == reinterpret_cast<PyTypeObject*>(THPVariableClass);
}

/* autocast on for any device (it is on where its dispatch key is not excluded): a
 * superset of torch._C._is_any_autocast_enabled()'s devices, so never less careful */
bool any_autocast() {
    const auto excluded = c10::impl::tls_local_dispatch_key_set().excluded_;
    return !(c10::autocast_dispatch_keyset - excluded).empty();
}

/* tensors that only look dense: functorch's vmap/grad wrappers, functionalize's
 * (data_ptr 0), __torch_dispatch__ subclasses */
constexpr c10::DispatchKeySet wrappers({c10::DispatchKey::FuncTorchBatched, c10::DispatchKey::FuncTorchGradWrapper,
                                        c10::DispatchKey::Functionalize, c10::DispatchKey::Python});

/* memory the C steps can read: a dense CPU tensor of dtype, contiguous, with storage */
bool plain(const at::Tensor& t, c10::ScalarType dtype) {
    return t.scalar_type() == dtype && t.layout() == c10::kStrided && t.device().is_cpu() && t.is_contiguous()
        && !t.key_set().has_any(wrappers) && t.has_storage() && t.data_ptr() != nullptr;
}

/* a state tensor of the expected shape: (L, B, H) batched, (L, H) not */
bool state_ok(const Guard* g, PyObject* obj, int64_t batch, bool batched, bool grad, const void** ptr) {
    if (!exact_tensor(obj))
        return false;
    const at::Tensor& s = THPVariable_Unpack(obj);
    if (!plain(s, g->dtype) || (grad && s.requires_grad()))
        return false;
    auto sizes = s.sizes();
    if (batched ? (sizes.size() != 3 || sizes[1] != batch) : sizes.size() != 2)
        return false;
    if (sizes[0] != g->layers || sizes[sizes.size() - 1] != g->hidden_size)
        return false;
    *ptr = s.data_ptr();
    return true;
}

/* the checks; false (and nothing set) for anything but the step the guard was made for */
/* chunk: 0 a step's x, (B, I) or (I,); 1 a forward's one-step chunk, (1, B, I) or (1, I);
 * 2 the same batch-first, (B, 1, I) or (1, I) */
bool find_unchecked(const Guard* g, PyObject* x_obj, PyObject* state, int chunk, Found* out) {
    /* autocast would change the arithmetic; torch.jit.trace would not see a C call */
    if (!exact_tensor(x_obj) || any_autocast() || at::tracer::impl::is_dispatch_enabled())
        return false;
    const at::Tensor& x = THPVariable_Unpack(x_obj);
    const bool grad = c10::GradMode::is_enabled();
    if (!plain(x, g->dtype) || (grad && x.requires_grad()))
        return false;
    const auto dim = x.dim() - (chunk ? 1 : 0);  /* the step's dims, without the chunk's time */
    if ((dim != 1 && dim != 2) || x.size(-1) != g->input_size)
        return false;
    if (chunk && x.size(chunk == 2 && dim == 2 ? 1 : 0) != 1)  /* one time step */
        return false;
    const bool batched = dim == 2;
    const int64_t batch = batched ? x.size(chunk == 1 ? 1 : 0) : 1;
    if (batch < 1 || batch > g->max_batch)
        return false;
    const void* ptr[2] = {nullptr, nullptr};
    if (g->states == 1 && !PyTuple_CheckExact(state)) {  /* one state: the tensor, or a 1-tuple of it */
        if (!state_ok(g, state, batch, batched, grad, &ptr[0]))
            return false;
    } else {
        if (!PyTuple_CheckExact(state) || PyTuple_GET_SIZE(state) != g->states)
            return false;
        for (Py_ssize_t k = 0; k < g->states; k++)
            if (!state_ok(g, PyTuple_GET_ITEM(state, k), batch, batched, grad, &ptr[k]))
                return false;
    }
    const auto& sources = *g->sources;
    for (size_t k = 0; k < sources.size(); k++) {
        auto* impl = sources[k].unsafeGetTensorImpl();
        if (impl->version_counter().current_version() != static_cast<uint32_t>((*g->versions)[k])
            || sources[k].data_ptr() != (*g->addresses)[k] || (grad && sources[k].requires_grad()))
            return false;
    }
    *out = Found{batch, batched, x.data_ptr(), ptr[0], ptr[1]};
    return true;
}

/* find_unchecked, declining (not raising through C++) whatever a tensor query throws */
bool find(const Guard* g, PyObject* x_obj, PyObject* state, int chunk, Found* out) {
    try {
        return find_unchecked(g, x_obj, state, chunk, out);
    } catch (const std::exception&) {
        return false;
    }
}

PyObject* guard_check(PyObject* self, PyObject* args) {
    PyObject *x_obj, *state;
    if (!PyArg_UnpackTuple(args, "check", 2, 2, &x_obj, &state))
        return nullptr;
    Found f;
    if (!find(reinterpret_cast<const Guard*>(self), x_obj, state, 0, &f))
        Py_RETURN_NONE;
    return Py_BuildValue("(LOKKKi)", static_cast<long long>(f.batch), f.batched ? Py_True : Py_False,
                         reinterpret_cast<unsigned long long>(f.x), reinterpret_cast<unsigned long long>(f.h),
                         reinterpret_cast<unsigned long long>(f.c), at::get_num_threads());
}

/* step(x, state) -> None (not the bound step) | Ellipsis (this shape's outputs made ahead
 * ran out: refill spare[(batch, batched, chunk)], call again) | (y, state) */
PyObject* guard_step(PyObject* self, PyObject* args) {
    Guard* g = reinterpret_cast<Guard*>(self);
    PyObject *x_obj, *state, *params;
    int chunk = 0;
    if (!PyArg_ParseTuple(args, "OOO|i", &x_obj, &state, &params, &chunk))
        return nullptr;
    if (chunk < 0 || chunk > 2) {
        PyErr_SetString(PyExc_ValueError, "step: chunk must be 0, 1 or 2");
        return nullptr;
    }
    if (!PyDict_Check(params))
        Py_RETURN_NONE;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(g->names); k++)  /* the same Parameters (none replaced) */
        if (PyDict_GetItem(params, PyTuple_GET_ITEM(g->names, k)) != PyTuple_GET_ITEM(g->objects, k))
            Py_RETURN_NONE;
    Found f;
    if (!find(g, x_obj, state, chunk, &f))
        Py_RETURN_NONE;
    PyObject* key = Py_BuildValue("(LOi)", static_cast<long long>(f.batch), f.batched ? Py_True : Py_False, chunk);
    if (!key)
        return nullptr;
    PyObject* made = PyDict_GetItem(g->spare, key);  /* borrowed */
    Py_DECREF(key);
    if (!made || !PyList_CheckExact(made) || PyList_GET_SIZE(made) == 0) {
        Py_INCREF(Py_Ellipsis);
        return Py_Ellipsis;
    }
    /* the last entry: (y or out, h_out, c_out or None, h_out address, c_out address, out address) */
    Py_ssize_t last = PyList_GET_SIZE(made) - 1;
    PyObject* item = PyList_GET_ITEM(made, last);
    Py_INCREF(item);
    if (PyList_SetSlice(made, last, last + 1, nullptr) < 0) {
        Py_DECREF(item);
        return nullptr;
    }
    char* h_out = static_cast<char*>(PyLong_AsVoidPtr(PyTuple_GET_ITEM(item, 3)));
    char* c_out = static_cast<char*>(PyLong_AsVoidPtr(PyTuple_GET_ITEM(item, 4)));
    char* y_out = static_cast<char*>(PyLong_AsVoidPtr(PyTuple_GET_ITEM(item, 5)));
    const long H = g->hidden_size, stride = f.batch * H * g->element_size;
    const long size = (*g->scratch)[f.batch], threads = at::get_num_threads();
    const long sweep = g->sweep = 1 - g->sweep;  /* alternate the rows' order (stream_step.h) */
    void* work = nullptr;
    if (size > g->stack_scratch && !(work = std::malloc(size * g->element_size))) {
        Py_DECREF(item);
        return PyErr_NoMemory();
    }
    const char *x = static_cast<const char*>(f.x), *h = static_cast<const char*>(f.h),
               *c = static_cast<const char*>(f.c);
    Py_BEGIN_ALLOW_THREADS
    long at = 0;
    for (size_t k = 0; k < g->consts->size(); k++) {
        g->step_any((*g->consts)[k], f.batch, (*g->inputs)[k], H, threads, sweep, x, h + at, c ? c + at : nullptr,
                    h_out + at, c_out ? c_out + at : nullptr, work);
        x = h_out + at;
        at += stride;
    }
    if (y_out)  /* a forward's output: the last layer's h, in its own memory (as torch.nn's) */
        std::memcpy(y_out, h_out + at - stride, stride);
    Py_END_ALLOW_THREADS
    std::free(work);
    PyObject* result = g->states == 2
        ? Py_BuildValue("(O(OO))", PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1), PyTuple_GET_ITEM(item, 2))
        : Py_BuildValue("(OO)", PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1));
    Py_DECREF(item);
    return result;
}

void guard_dealloc(PyObject* self) {
    Guard* g = reinterpret_cast<Guard*>(self);
    delete g->sources;
    delete g->versions;
    delete g->addresses;
    delete g->consts;
    delete g->inputs;
    delete g->scratch;
    Py_XDECREF(g->spare);
    Py_XDECREF(g->names);
    Py_XDECREF(g->objects);
    Py_TYPE(self)->tp_free(self);
}

PyMethodDef guard_methods[] = {
    {"check", guard_check, METH_VARARGS, "check(x, state) -> None | (batch, batched, x_ptr, h_ptr, c_ptr, threads)"},
    {"step", guard_step, METH_VARARGS, "step(x, state, params, chunk=0) -> None | Ellipsis | (y, state)"},
    {nullptr, nullptr, 0, nullptr}};

PyTypeObject GuardType = {PyVarObject_HEAD_INIT(nullptr, 0)};

/* a tuple of Python ints as a vector, through cast */
template <typename T>
bool ints(PyObject* tuple, std::vector<T>* out) {
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tuple); k++) {
        PyObject* item = PyTuple_GET_ITEM(tuple, k);
        if (!PyLong_Check(item))
            return false;
        out->push_back(reinterpret_cast<T>(PyLong_AsVoidPtr(item)));
    }
    return true;
}

PyObject* make_guard(PyObject*, PyObject* args) {
    PyObject *sources, *like, *step_any, *consts, *inputs, *scratch, *spare, *names;
    long long input_size, hidden_size, layers, states, max_batch, element_size, stack_scratch;
    if (!PyArg_ParseTuple(args, "O!OLLLLLOO!O!O!LLO!O!", &PyTuple_Type, &sources, &like, &input_size, &hidden_size,
                          &layers, &states, &max_batch, &step_any, &PyTuple_Type, &consts, &PyTuple_Type, &inputs,
                          &PyTuple_Type, &scratch, &element_size, &stack_scratch, &PyDict_Type, &spare,
                          &PyTuple_Type, &names))
        return nullptr;
    if (!THPVariable_Check(like) || (states != 1 && states != 2) || PyTuple_GET_SIZE(consts) != layers
        || PyTuple_GET_SIZE(inputs) != layers || PyTuple_GET_SIZE(scratch) <= max_batch || !PyLong_Check(step_any)
        || PyTuple_GET_SIZE(names) != PyTuple_GET_SIZE(sources)) {
        PyErr_SetString(PyExc_TypeError, "guard: bad arguments (see step_guard.cpp)");
        return nullptr;
    }
    Guard* g = PyObject_New(Guard, &GuardType);
    if (!g)
        return nullptr;
    g->sources = new std::vector<at::Tensor>();
    g->versions = new std::vector<int64_t>();
    g->addresses = new std::vector<const void*>();
    g->consts = new std::vector<const void*>();
    g->inputs = new std::vector<long>();
    g->scratch = new std::vector<long>();
    Py_INCREF(spare);
    g->spare = spare;
    Py_INCREF(names);
    g->names = names;
    Py_INCREF(sources);
    g->objects = sources;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(sources); k++) {
        PyObject* item = PyTuple_GET_ITEM(sources, k);
        if (!THPVariable_Check(item)) {
            Py_DECREF(g);
            PyErr_SetString(PyExc_TypeError, "guard: sources must be Tensors");
            return nullptr;
        }
        const at::Tensor& t = THPVariable_Unpack(item);
        try {
            g->versions->push_back(t.unsafeGetTensorImpl()->version_counter().current_version());
            g->addresses->push_back(t.data_ptr());
        } catch (const std::exception& err) {
            Py_DECREF(g);
            PyErr_SetString(PyExc_TypeError, err.what());
            return nullptr;
        }
        g->sources->push_back(t);
    }
    if (!ints(consts, g->consts) || !ints(inputs, g->inputs) || !ints(scratch, g->scratch)) {
        Py_DECREF(g);
        PyErr_SetString(PyExc_TypeError, "guard: consts, inputs and scratch must be ints");
        return nullptr;
    }
    g->step_any = reinterpret_cast<StepAny>(PyLong_AsVoidPtr(step_any));
    g->dtype = THPVariable_Unpack(like).scalar_type();
    g->input_size = input_size;
    g->hidden_size = hidden_size;
    g->layers = layers;
    g->states = states;
    g->max_batch = max_batch;
    g->element_size = element_size;
    g->stack_scratch = stack_scratch;
    g->sweep = 1;
    return reinterpret_cast<PyObject*>(g);
}

PyMethodDef module_methods[] = {
    {"guard", make_guard, METH_VARARGS,
     "guard(sources, dtype_like, input_size, hidden_size, layers, states, max_batch, step_any, consts, inputs, "
     "scratch, element_size, stack_scratch, spare, names) -> Guard"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "rnnkit_step_guard", nullptr, -1, module_methods};

}  // namespace

PyMODINIT_FUNC PyInit_rnnkit_step_guard(void) {
    GuardType.tp_name = "rnnkit_step_guard.Guard";
    GuardType.tp_basicsize = sizeof(Guard);
    GuardType.tp_flags = Py_TPFLAGS_DEFAULT;
    GuardType.tp_dealloc = guard_dealloc;
    GuardType.tp_methods = guard_methods;
    if (PyType_Ready(&GuardType) < 0)
        return nullptr;
    return PyModule_Create(&module_def);
}
