/* _metric_add: a connection's metric records in C.
 *
 * An optional accelerator of histograms.OwnHistogram.record_items and metric_totals.ApiTotals.add, which
 * stay the reference: on their usual paths these do exactly what those do (the same counts, sums added in
 * the same order, min, max, exemplars, under the same lock); anywhere else (an amount that is not a
 * finite non-negative float, an exemplar under another filter or span than a sampled lean one, the first
 * record, a value of another type) they call the Python code, which then does it all. They decline before
 * changing anything: nothing is counted twice or half.
 *
 * A Recorder is told its histogram's constant parts once (its lock, its bounds as doubles, the offsets of
 * _Point's and LeanSpan's __slots__ fields, the context variable that holds the current span) and reads
 * the rest as Python does: the histogram's _by_items under its lock (a delta collection replaces it), and
 * histograms' time_ns global per exemplar (tests move that clock). A record is one C call where it was
 * ~105 interpreter steps.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* T_OBJECT_EX: how a __slots__ field is stored */

/* Bumped when the contract changes: histograms and metric_totals ignore a module built from other sources. */
#define METRIC_ADD_FORMAT 2

/* OwnHistogram's exemplar filters (histograms._OFF, _ON, _TRACE_BASED). */
#define EXEMPLARS_OFF 0
#define EXEMPLARS_TRACE_BASED 2

/* RelayStats' eight counters, in ApiTotals.counts' order. */
#define COUNTERS 8
static const char *const COUNTER_NAMES[COUNTERS] = {
    "messages_in", "binary_in", "messages_out", "binary_out",
    "bytes_in", "binary_bytes_in", "bytes_out", "binary_bytes_out",
};

/* Interned names, made once per process (never freed: a handful of strings). */
static PyObject *one;
static PyObject *str_listed, *str_by_items, *str_point, *str_time_ns, *str_counts, *str_slots_in, *str_slots_out,
    *str_sizes_in, *str_sizes_out, *str_policy_actions, *str_actions, *str_update, *counter_names[COUNTERS];

static int
intern_names(void)
{
    if (str_listed != NULL) {
        return 0;
    }
    struct {
        PyObject **name;
        const char *text;
    } names[] = {
        {&str_by_items, "_by_items"}, {&str_point, "_point"}, {&str_time_ns, "time_ns"},
        {&str_counts, "counts"}, {&str_slots_in, "slots_in"}, {&str_slots_out, "slots_out"},
        {&str_sizes_in, "sizes_in"}, {&str_sizes_out, "sizes_out"}, {&str_policy_actions, "policy_actions"},
        {&str_actions, "actions"}, {&str_update, "update"}, {&str_listed, "_listed"},  /* last: the guard */
    };
    if ((one = PyLong_FromLong(1)) == NULL) {
        return -1;
    }
    for (int i = 0; i < COUNTERS; i++) {
        if ((counter_names[i] = PyUnicode_InternFromString(COUNTER_NAMES[i])) == NULL) {
            return -1;
        }
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if ((*names[i].name = PyUnicode_InternFromString(names[i].text)) == NULL) {
            return -1;
        }
    }
    return 0;
}

/* The offset of `type`'s own __slots__ field `name` (a member descriptor in its __dict__, of a T_OBJECT_EX
 * field within the instance); -1 with TypeError when it has no such field. */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descriptor = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (descriptor != NULL && Py_IS_TYPE(descriptor, &PyMemberDescr_Type)
        && ((PyDescrObject *)descriptor)->d_type == type) {
        PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
        if (member != NULL && member->type == T_OBJECT_EX && member->offset >= (Py_ssize_t)sizeof(PyObject)
            && member->offset <= type->tp_basicsize - (Py_ssize_t)sizeof(PyObject *)) {
            return member->offset;
        }
    }
    PyErr_Format(PyExc_TypeError, "%s has no __slots__ field %s", type->tp_name, name);
    return -1;
}

#define SLOT(object, offset) (*(PyObject **)((char *)(object) + (offset)))

/* Replaces a slot's value (a new reference is stolen). */
static void
set_slot(PyObject *object, Py_ssize_t offset, PyObject *value)
{
    PyObject *old = SLOT(object, offset);
    SLOT(object, offset) = value;
    Py_XDECREF(old);
}

/* ---------------------------------------------------------------------------------------------------------
 * Recorder: one OwnHistogram's record_items. */

enum { P_COUNTS, P_SUM, P_MIN, P_MAX, P_EXEMPLARS, POINT_FIELDS };
static const char *const POINT_NAMES[POINT_FIELDS] = {"counts", "sum", "min", "max", "exemplars"};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *histogram;
    PyObject *fallback;         /* its Python record_items: the reference, called for whatever this declines */
    PyObject *acquire;          /* its lock's bound methods */
    PyObject *release;
    PyObject *globals;          /* histograms' module dict: its time_ns, read per exemplar as Python reads it */
    PyObject *context_var;      /* the API's current-context variable; None: exemplars are left to Python */
    PyObject *context_type;     /* opentelemetry.context.Context (a dict whose get is dict.get) */
    PyObject *span_key;         /* the context's key of the current span */
    PyTypeObject *span_type;    /* LeanSpan */
    PyTypeObject *point_type;   /* histograms._Point */
    Py_ssize_t context_offset;  /* LeanSpan._context */
    Py_ssize_t point_offsets[POINT_FIELDS];
    double *bounds;
    Py_ssize_t bound_count;
    int exemplars;
    int listed;                 /* histogram._listed seen true (it never goes back) */
} Recorder;

static int
recorder_traverse(Recorder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->histogram);
    Py_VISIT(self->fallback);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->globals);
    Py_VISIT(self->context_var);
    Py_VISIT(self->context_type);
    Py_VISIT(self->span_key);
    Py_VISIT(self->span_type);
    Py_VISIT(self->point_type);
    return 0;
}

static int
recorder_clear(Recorder *self)
{
    Py_CLEAR(self->histogram);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->globals);
    Py_CLEAR(self->context_var);
    Py_CLEAR(self->context_type);
    Py_CLEAR(self->span_key);
    Py_CLEAR(self->span_type);
    Py_CLEAR(self->point_type);
    return 0;
}

static void
recorder_dealloc(Recorder *self)
{
    PyObject_GC_UnTrack(self);
    recorder_clear(self);
    PyMem_Free(self->bounds);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Whether a lean span's context (a SpanContext: trace id, span id, remote, flags, ...) has the sampled
 * flag, as `context[3] & 1`: 1, 0, or -1 with an exception set. */
static int
sampled(PyObject *context)
{
    PyObject *flags;
    if (PyTuple_Check(context) && Py_TYPE(context)->tp_as_mapping == PyTuple_Type.tp_as_mapping
        && PyTuple_GET_SIZE(context) > 3) {
        flags = Py_NewRef(PyTuple_GET_ITEM(context, 3));
    }
    else {
        PyObject *index = PyLong_FromLong(3);
        if (index == NULL) {
            return -1;
        }
        flags = PyObject_GetItem(context, index);
        Py_DECREF(index);
        if (flags == NULL) {
            return -1;
        }
    }
    if (PyLong_Check(flags) && Py_TYPE(flags)->tp_as_number->nb_and == PyLong_Type.tp_as_number->nb_and) {
        int overflow;
        long long value = PyLong_AsLongLongAndOverflow(flags, &overflow);
        if (!overflow && !(value == -1 && PyErr_Occurred())) {
            Py_DECREF(flags);
            return (int)(value & 1);
        }
        PyErr_Clear();
    }
    PyObject *bit = PyNumber_And(flags, one);
    Py_DECREF(flags);
    if (bit == NULL) {
        return -1;
    }
    int result = PyObject_IsTrue(bit);
    Py_DECREF(bit);
    return result;
}

/* What record_items' exemplar part decides: 1 (no exemplar: *ids stays NULL; or one with *ids, a new
 * reference), 0 (declined: the Python code does it all) or -1 (an exception set). */
static int
exemplar_ids(Recorder *self, PyObject **ids)
{
    *ids = NULL;
    if (self->exemplars == EXEMPLARS_OFF) {
        return 1;
    }
    if (self->context_var == Py_None) {
        return 0;
    }
    PyObject *context;
    if (PyContextVar_Get(self->context_var, NULL, &context) < 0) {
        return -1;
    }
    if (context == NULL) {
        return 0; /* no value and no default: Python raises it */
    }
    int decided = 0;
    if (PyDict_CheckExact(context) || (PyObject *)Py_TYPE(context) == self->context_type) {
        PyObject *found = PyDict_GetItemWithError(context, self->span_key); /* borrowed */
        if (found == NULL && PyErr_Occurred()) {
            decided = -1;
        }
        else if (found != NULL && Py_TYPE(found) == self->span_type) {
            /* Held: reading its flags may run code that replaces the span's context (freed, then used). */
            PyObject *span_context = Py_XNewRef(SLOT(found, self->context_offset));
            int is_sampled = span_context == NULL ? 0 : sampled(span_context);
            if (is_sampled < 0) {
                decided = -1;
            }
            else if (is_sampled) {
                *ids = Py_NewRef(span_context);
                decided = 1;
            }
            Py_XDECREF(span_context);
            /* an unsampled lean span, or one without a context: Python's _add path */
        }
        else {
            decided = found == NULL && self->exemplars == EXEMPLARS_TRACE_BASED; /* no span: none offered */
        }
    }
    Py_DECREF(context);
    return decided;
}

/* The bucket of `value` as bisect_left(bounds, value) finds it (the same steps, bounds as doubles). */
static Py_ssize_t
bucket(Recorder *self, double value)
{
    Py_ssize_t low = 0, high = self->bound_count;
    while (low < high) {
        Py_ssize_t middle = (Py_ssize_t)(((size_t)low + (size_t)high) / 2);
        if (self->bounds[middle] < value) {
            low = middle + 1;
        }
        else {
            high = middle;
        }
    }
    return low;
}

/* amount < current (less) or amount > current: 1, 0, -1 with an exception set. */
static int
beyond(PyObject *amount, double value, PyObject *current, int less)
{
    if (PyFloat_CheckExact(current)) {
        double bound = PyFloat_AS_DOUBLE(current);
        return less ? value < bound : value > bound;
    }
    return PyObject_RichCompareBool(amount, current, less ? Py_LT : Py_GT);
}

/* The update under the lock, on `point` (an exact _Point): 1 done, 0 declined (nothing changed), -1 error. */
static int
update_point(Recorder *self, PyObject *point, PyObject *amount, double value, Py_ssize_t index,
             PyObject *attributes, PyObject *ids)
{
    const Py_ssize_t *offsets = self->point_offsets;
    PyObject *counts = SLOT(point, offsets[P_COUNTS]), *sum = SLOT(point, offsets[P_SUM]);
    PyObject *min = SLOT(point, offsets[P_MIN]), *max = SLOT(point, offsets[P_MAX]);
    if (counts == NULL || sum == NULL || min == NULL || max == NULL || !PyList_CheckExact(counts)
        || index >= PyList_GET_SIZE(counts) || !PyLong_CheckExact(PyList_GET_ITEM(counts, index))
        || !(PyFloat_CheckExact(sum) || PyLong_CheckExact(sum))) {
        return 0;
    }
    PyObject *time_ns = NULL;
    if (ids != NULL) {
        time_ns = PyDict_GetItemWithError(self->globals, str_time_ns); /* borrowed */
        if (time_ns == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        Py_INCREF(time_ns);
    }
    /* point.counts[index] += 1 */
    PyObject *old = PyList_GET_ITEM(counts, index);
    PyObject *count = PyNumber_Add(old, one);
    if (count == NULL) {
        goto failed;
    }
    PyList_SET_ITEM(counts, index, count);
    Py_DECREF(old);
    /* point.sum += amount (sum + amount: this order) */
    PyObject *total = PyFloat_CheckExact(sum) ? PyFloat_FromDouble(PyFloat_AS_DOUBLE(sum) + value)
                                              : PyNumber_Add(sum, amount);
    if (total == NULL) {
        goto failed;
    }
    set_slot(point, offsets[P_SUM], total);
    int less = beyond(amount, value, min, 1);
    if (less < 0) {
        goto failed;
    }
    if (less) {
        set_slot(point, offsets[P_MIN], Py_NewRef(amount));
    }
    if ((max = SLOT(point, offsets[P_MAX])) == NULL) { /* read again: a min of another type ran code */
        PyErr_SetString(PyExc_AttributeError, "max");
        goto failed;
    }
    int more = beyond(amount, value, max, 0);
    if (more < 0) {
        goto failed;
    }
    if (more) {
        set_slot(point, offsets[P_MAX], Py_NewRef(amount));
    }
    if (ids != NULL) { /* point.exemplars[index] = (amount, time_ns(), attributes, ids) */
        PyObject *now = PyObject_CallNoArgs(time_ns);
        Py_CLEAR(time_ns);
        if (now == NULL) {
            goto failed;
        }
        PyObject *slot = PyTuple_Pack(4, amount, now, attributes, ids);
        Py_DECREF(now);
        if (slot == NULL) {
            goto failed;
        }
        PyObject *exemplars = SLOT(point, offsets[P_EXEMPLARS]);
        PyObject *key = exemplars == NULL ? NULL : PyLong_FromSsize_t(index);
        int stored = key == NULL ? -1 : PyObject_SetItem(exemplars, key, slot);
        if (exemplars == NULL) {
            PyErr_SetString(PyExc_AttributeError, "exemplars");
        }
        Py_XDECREF(key);
        Py_DECREF(slot);
        if (stored < 0) {
            goto failed;
        }
    }
    return 1;
failed:
    Py_XDECREF(time_ns);
    return -1;
}

/* Calls the lock's acquire or release: 0, or -1 with an exception set. */
static int
call_lock(PyObject *method)
{
    PyObject *result = PyObject_CallNoArgs(method);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* recorder(amount, attributes, key, /): OwnHistogram.record_items. */
static PyObject *
recorder_call(PyObject *object, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Recorder *self = (Recorder *)object;
    if (self->histogram == NULL) { /* cleared by the collector, in a cycle no one reaches (but a finalizer) */
        PyErr_SetString(PyExc_RuntimeError, "this Recorder was cleared");
        return NULL;
    }
    if (kwnames != NULL || PyVectorcall_NARGS(nargsf) != 3 || !PyFloat_CheckExact(args[0])) {
        goto python;
    }
    PyObject *amount = args[0], *attributes = args[1], *key = args[2];
    double value = PyFloat_AS_DOUBLE(amount);
    if (!(value >= 0.0 && value < Py_HUGE_VAL)) { /* NaN, negative, infinite: refused and logged there */
        goto python;
    }
    PyObject *ids;
    int decided = exemplar_ids(self, &ids);
    if (decided <= 0) {
        if (decided < 0) {
            return NULL;
        }
        goto python;
    }
    if (!self->listed) { /* the first record stands the histogram in the storage: Python's _list */
        PyObject *listed = PyObject_GetAttr(self->histogram, str_listed);
        int is_listed = listed == NULL ? -1 : PyObject_IsTrue(listed);
        Py_XDECREF(listed);
        if (is_listed <= 0) {
            Py_XDECREF(ids);
            if (is_listed < 0) {
                return NULL;
            }
            goto python;
        }
        self->listed = 1;
    }
    Py_ssize_t index = bucket(self, value);
    if (call_lock(self->acquire) < 0) {
        Py_XDECREF(ids);
        return NULL;
    }
    /* With the lock: point = self._by_items.get(key) or self._point(key, attributes), then its update. */
    int done = -1;
    PyObject *point = NULL;
    PyObject *by_items = PyObject_GetAttr(self->histogram, str_by_items);
    if (by_items == NULL) {
        goto unlock;
    }
    if (PyDict_CheckExact(by_items)) {
        point = PyDict_GetItemWithError(by_items, key);
        Py_XINCREF(point);
        Py_DECREF(by_items);
        if (point == NULL && PyErr_Occurred()) {
            goto unlock;
        }
    }
    else {
        Py_DECREF(by_items);
        done = 0;
        goto unlock;
    }
    if (point == NULL) {
        PyObject *call[3] = {self->histogram, key, attributes};
        point = PyObject_VectorcallMethod(str_point, call, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (point == NULL) {
            goto unlock;
        }
    }
    done = Py_TYPE(point) == self->point_type ? update_point(self, point, amount, value, index, attributes, ids) : 0;
unlock:
    Py_XDECREF(point);
    Py_XDECREF(ids);
    if (done < 0) { /* as ``finally: lock.release()``: the error stays the one raised */
        PyObject *type, *error, *traceback;
        PyErr_Fetch(&type, &error, &traceback);
        if (call_lock(self->release) < 0) {
            Py_XDECREF(type);
            Py_XDECREF(error);
            Py_XDECREF(traceback);
            return NULL;
        }
        PyErr_Restore(type, error, traceback);
        return NULL;
    }
    if (call_lock(self->release) < 0) {
        return NULL;
    }
    if (done) {
        Py_RETURN_NONE;
    }
python:
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

/* Recorder(histogram, fallback, lock, bounds, exemplars, point_type, span_type, context_var, context_type,
 *          span_key, globals, /) */
static PyObject *
recorder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *histogram, *fallback, *lock, *bounds, *context_var, *context_type, *span_key, *globals;
    PyTypeObject *point_type, *span_type;
    int exemplars;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "Recorder() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOOO!iO!O!OOOO!:Recorder", &histogram, &fallback, &lock, &PyTuple_Type, &bounds,
                          &exemplars, &PyType_Type, &point_type, &PyType_Type, &span_type, &context_var,
                          &context_type, &span_key, &PyDict_Type, &globals)) {
        return NULL;
    }
    if (context_var != Py_None && !PyContextVar_CheckExact(context_var)) {
        PyErr_SetString(PyExc_TypeError, "Recorder() needs a ContextVar or None");
        return NULL;
    }
    Py_ssize_t bound_count = PyTuple_GET_SIZE(bounds);
    for (Py_ssize_t i = 0; i < bound_count; i++) {
        if (!PyFloat_CheckExact(PyTuple_GET_ITEM(bounds, i))) { /* an int compares exactly: left to Python */
            PyErr_SetString(PyExc_TypeError, "Recorder() needs float bounds");
            return NULL;
        }
    }
    Py_ssize_t context_offset = slot_offset(span_type, "_context");
    if (context_offset < 0) {
        return NULL;
    }
    Py_ssize_t point_offsets[POINT_FIELDS];
    for (int i = 0; i < POINT_FIELDS; i++) {
        if ((point_offsets[i] = slot_offset(point_type, POINT_NAMES[i])) < 0) {
            return NULL;
        }
    }
    Recorder *self = (Recorder *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = recorder_call;
    self->bounds = PyMem_Malloc(sizeof(double) * (size_t)(bound_count ? bound_count : 1));
    self->acquire = PyObject_GetAttrString(lock, "acquire");
    self->release = PyObject_GetAttrString(lock, "release");
    if (self->bounds == NULL || self->acquire == NULL || self->release == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        Py_DECREF(self);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < bound_count; i++) {
        self->bounds[i] = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(bounds, i));
    }
    self->bound_count = bound_count;
    self->histogram = Py_NewRef(histogram);
    self->fallback = Py_NewRef(fallback);
    self->globals = Py_NewRef(globals);
    self->context_var = Py_NewRef(context_var);
    self->context_type = Py_NewRef(context_type);
    self->span_key = Py_NewRef(span_key);
    self->span_type = (PyTypeObject *)Py_NewRef(span_type);
    self->point_type = (PyTypeObject *)Py_NewRef(point_type);
    self->context_offset = context_offset;
    memcpy(self->point_offsets, point_offsets, sizeof(point_offsets));
    self->exemplars = exemplars;
    return (PyObject *)self;
}

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asgi_ws_gateway.telemetry._metric_add.Recorder",
    .tp_doc = "Recorder(histogram, fallback, lock, bounds, exemplars, point_type, span_type, context_var,\n"
              "context_type, span_key, globals, /)\n--\n\n"
              "An OwnHistogram's record_items(amount, attributes, key, /) in C, calling fallback (the\n"
              "Python one) for whatever it declines.",
    .tp_basicsize = sizeof(Recorder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = recorder_new,
    .tp_dealloc = (destructor)recorder_dealloc,
    .tp_traverse = (traverseproc)recorder_traverse,
    .tp_clear = (inquiry)recorder_clear,
    .tp_vectorcall_offset = offsetof(Recorder, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ---------------------------------------------------------------------------------------------------------
 * add_totals(totals, stats, /): ApiTotals.add. */

enum { T_COUNTS, T_SLOTS_IN, T_SLOTS_OUT, TOTALS_FIELDS };
static const char *const TOTALS_NAMES[TOTALS_FIELDS] = {"counts", "slots_in", "slots_out"};

typedef struct {
    PyObject *python_add;     /* ApiTotals.add: called for whatever add_totals declines (bound by bind_totals) */
    Py_ssize_t slots;         /* metric_totals._SLOTS */
    PyTypeObject *totals_type; /* ApiTotals, whose lists are read at their __slots__' offsets */
    Py_ssize_t totals_offsets[TOTALS_FIELDS];
} State;

/* An exact int's truth, without a call where the layout is known (3.11: zero has no digits). */
static inline int
nonzero(PyObject *value)
{
#if PY_VERSION_HEX < 0x030C0000
    return Py_SIZE(value) != 0;
#else
    return PyObject_IsTrue(value);
#endif
}

/* A new reference to an ApiTotals list field: at its offset for exactly the bound type, else by attribute. */
static PyObject *
totals_field(State *state, PyObject *totals, int which, PyObject *name)
{
    if (Py_TYPE(totals) == state->totals_type) {
        PyObject *value = SLOT(totals, state->totals_offsets[which]);
        if (value != NULL) {
            return Py_NewRef(value);
        }
    }
    return PyObject_GetAttr(totals, name);
}

/* The slots ApiTotals.add's compress() visits, or -1 when a list is not one this adds (no exception). */
static Py_ssize_t
visited_slots(PyObject *totals, PyObject *sizes, Py_ssize_t slots)
{
    if (!PyList_CheckExact(totals) || !PyList_CheckExact(sizes)) {
        return -1;
    }
    Py_ssize_t visited = PyList_GET_SIZE(sizes) < slots ? PyList_GET_SIZE(sizes) : slots;
    if (PyList_GET_SIZE(totals) < visited) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < visited; i++) {
        if (!PyLong_CheckExact(PyList_GET_ITEM(sizes, i)) || !PyLong_CheckExact(PyList_GET_ITEM(totals, i))) {
            return -1;
        }
    }
    return visited;
}

/* totals[i] += value: 0, or -1 with an exception set. */
static int
add_item(PyObject *totals, Py_ssize_t i, PyObject *value)
{
    PyObject *old = PyList_GET_ITEM(totals, i);
    PyObject *sum = PyNumber_Add(old, value);
    if (sum == NULL) {
        return -1;
    }
    PyList_SET_ITEM(totals, i, sum);
    Py_DECREF(old);
    return 0;
}

static PyObject *
add_totals(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    State *state = PyModule_GetState(module);
    if (state == NULL) {
        return NULL;
    }
    if (nargs != 2 || state->python_add == NULL) {
        if (state->python_add == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "add_totals() before bind_totals()");
            return NULL;
        }
        return PyObject_Vectorcall(state->python_add, args, (size_t)nargs, NULL);
    }
    PyObject *totals = args[0], *stats = args[1];
    PyObject *values[COUNTERS] = {NULL};
    PyObject *lists[5] = {NULL}; /* counts, slots_in, sizes_in, slots_out, sizes_out */
    PyObject *result = NULL;
    int declined = 0;
    for (int i = 0; i < COUNTERS; i++) {
        if ((values[i] = PyObject_GetAttr(stats, counter_names[i])) == NULL) {
            goto done;
        }
        declined |= !PyLong_CheckExact(values[i]);
    }
    PyObject *const list_owners[5] = {totals, totals, stats, totals, stats};
    PyObject *const list_names[5] = {str_counts, str_slots_in, str_sizes_in, str_slots_out, str_sizes_out};
    static const int totals_fields[5] = {T_COUNTS, T_SLOTS_IN, -1, T_SLOTS_OUT, -1};
    for (int i = 0; i < 5; i++) {
        lists[i] = totals_fields[i] < 0 ? PyObject_GetAttr(list_owners[i], list_names[i])
                                        : totals_field(state, totals, totals_fields[i], list_names[i]);
        if (lists[i] == NULL) {
            goto done;
        }
    }
    PyObject *counts = lists[0];
    declined |= !PyList_CheckExact(counts) || PyList_GET_SIZE(counts) < COUNTERS;
    for (int i = 0; i < COUNTERS && !declined; i++) {
        declined |= !PyLong_CheckExact(PyList_GET_ITEM(counts, i));
    }
    Py_ssize_t visited_in = visited_slots(lists[1], lists[2], state->slots);
    Py_ssize_t visited_out = visited_slots(lists[3], lists[4], state->slots);
    if (declined || visited_in < 0 || visited_out < 0) {
        result = PyObject_Vectorcall(state->python_add, args, (size_t)nargs, NULL);
        goto done;
    }
    for (int i = 0; i < COUNTERS; i++) {
        if (add_item(counts, i, values[i]) < 0) {
            goto done;
        }
    }
    for (int side = 0; side < 2; side++) {
        PyObject *slot_totals = lists[1 + 2 * side], *sizes = lists[2 + 2 * side];
        Py_ssize_t visited = side ? visited_out : visited_in;
        for (Py_ssize_t i = 0; i < visited; i++) {
            PyObject *size = PyList_GET_ITEM(sizes, i);
            if (nonzero(size) && add_item(slot_totals, i, size) < 0) {
                goto done;
            }
        }
    }
    /* if stats.policy_actions: self.actions.update(stats.policy_actions) */
    PyObject *actions = PyObject_GetAttr(stats, str_policy_actions);
    if (actions == NULL) {
        goto done;
    }
    int any = PyObject_IsTrue(actions);
    if (any > 0) {
        PyObject *tally = PyObject_GetAttr(totals, str_actions);
        if (tally != NULL) {
            result = PyObject_CallMethodOneArg(tally, str_update, actions);
            Py_DECREF(tally);
        }
    }
    else if (any == 0) {
        result = Py_NewRef(Py_None);
    }
    Py_DECREF(actions);
    if (result != NULL && result != Py_None) {
        Py_SETREF(result, Py_NewRef(Py_None));
    }
done:
    for (int i = 0; i < COUNTERS; i++) {
        Py_XDECREF(values[i]);
    }
    for (int i = 0; i < 5; i++) {
        Py_XDECREF(lists[i]);
    }
    return result;
}

/* bind_totals(python_add, slots, /) */
static PyObject *
bind_totals(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyCallable_Check(args[0]) || !PyLong_CheckExact(args[1]) || !PyType_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "bind_totals() needs ApiTotals.add, the slot count and ApiTotals");
        return NULL;
    }
    Py_ssize_t offsets[TOTALS_FIELDS];
    for (int i = 0; i < TOTALS_FIELDS; i++) {
        if ((offsets[i] = slot_offset((PyTypeObject *)args[2], TOTALS_NAMES[i])) < 0) {
            return NULL;
        }
    }
    Py_ssize_t slots = PyLong_AsSsize_t(args[1]);
    if (slots < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "bind_totals(): a negative slot count");
        }
        return NULL;
    }
    State *state = PyModule_GetState(module);
    if (state == NULL) {
        return NULL;
    }
    Py_XSETREF(state->python_add, Py_NewRef(args[0]));
    Py_XSETREF(state->totals_type, (PyTypeObject *)Py_NewRef(args[2]));
    memcpy(state->totals_offsets, offsets, sizeof(offsets));
    state->slots = slots;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"add_totals", (PyCFunction)(void (*)(void))add_totals, METH_FASTCALL,
     "add_totals(totals, stats, /)\n--\n\n"
     "ApiTotals.add(totals, stats) in C, calling the Python one for whatever it declines."},
    {"bind_totals", (PyCFunction)(void (*)(void))bind_totals, METH_FASTCALL,
     "bind_totals(python_add, slots, totals_type, /)\n--\n\n"
     "Tell add_totals ApiTotals.add (what it calls when it declines), the size slots it adds and\n"
     "ApiTotals (its lists read at their __slots__' offsets)."},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    if (intern_names() < 0 || PyType_Ready(&RecorderType) < 0) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "Recorder", (PyObject *)&RecorderType) < 0) {
        return -1;
    }
    return PyModule_AddIntConstant(module, "FORMAT", METRIC_ADD_FORMAT);
}

static int
traverse_module(PyObject *module, visitproc visit, void *arg)
{
    State *state = PyModule_GetState(module);
    if (state != NULL) {
        Py_VISIT(state->python_add);
        Py_VISIT(state->totals_type);
    }
    return 0;
}

static int
clear_module(PyObject *module)
{
    State *state = PyModule_GetState(module);
    if (state != NULL) {
        Py_CLEAR(state->python_add);
        Py_CLEAR(state->totals_type);
    }
    return 0;
}

static void
free_module(void *module)
{
    clear_module((PyObject *)module);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "asgi_ws_gateway.telemetry._metric_add",
    .m_doc = "A connection's metric records in C (an optional accelerator of histograms and metric_totals).",
    .m_size = sizeof(State),
    .m_methods = methods,
    .m_slots = slots,
    .m_traverse = traverse_module,
    .m_clear = clear_module,
    .m_free = free_module,
};

PyMODINIT_FUNC
PyInit__metric_add(void)
{
    return PyModuleDef_Init(&module_def);
}
