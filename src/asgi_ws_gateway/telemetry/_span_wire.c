/* _span_wire: the gateway's own spans (LeanSpan) in C: started, ended and queued for export (the
 * "span lifecycle" section below: lean_tracer.LeanTracer.start_owned, lean_spans.end_own and
 * lean_provider's batch queue, which stay the reference), and encoded as OTLP protobuf bytes.
 *
 * An optional accelerator of otlp_wire.SpanEncoder._lean_span, which stays the reference: for the
 * common span (no events, no dropped attributes, no trace state, links without attributes, str or int
 * attribute values, any status) encode_span() returns exactly the bytes that method returns (one
 * ScopeSpans.spans field: tag, length, Span); for any other span it returns None and the Python
 * encoder encodes it (and logs and leaves out what it cannot encode, as the SDK does). It never
 * encodes differently from Python: where unsure, it declines.
 *
 * encode_spans() does the same for a whole batch in one call when the batch is the usual one (every span
 * exactly the bound type, one resource and one scope by identity), writing the spans' fields into one
 * buffer that becomes the bytes object returned (no bytes per span, no join, no copy); a span it declines
 * is handed back in its place for Python. Any other batch is left whole to Python (None).
 *
 * Attribute values come from clients (paths, user agents): every write goes through one growing,
 * bounds-checked heap buffer (no fixed-size buffer holds variable data), every C API result is
 * checked, and the GIL is held throughout. The buffer is local to a call: code a call may run
 * (a __bool__) cannot reach another call's buffer.
 *
 * bind() tells it the span type's layout once: LeanSpan keeps its fields in __slots__, and a span of
 * exactly that type has them read at their offsets (found from the type's own member descriptors)
 * where a generic attribute lookup each cost ~190 instructions (a third of a span's encoding). Any
 * other object is read through PyObject_GetAttr, as before bind().
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>  /* T_OBJECT_EX: how a __slots__ field is stored */
#include <stdint.h>
#include <string.h>

/* Bumped when encode_span's contract changes: otlp_wire ignores a module built from other sources. */
#define SPAN_WIRE_FORMAT 7

/* What a step returns: done, an exception set (propagated), or "not this span" (no exception). */
#define DONE 0
#define FAILED (-1)
#define DECLINED 1

/* -- the buffer --------------------------------------------------------------------------------- */

typedef struct {
    unsigned char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    PyObject *bytes;  /* NULL: `data` is PyMem's; else `data` is this bytes object's (a batch's), handed out whole */
} Buffer;

/* A buffer of `cap` bytes that is a bytes object's (what encode_spans returns without a copy). */
static int
bytes_buffer(Buffer *buf, Py_ssize_t cap)
{
    buf->len = 0;
    buf->bytes = PyBytes_FromStringAndSize(NULL, cap);
    if (buf->bytes == NULL) {
        buf->data = NULL;
        buf->cap = 0;
        return FAILED;
    }
    buf->data = (unsigned char *)PyBytes_AS_STRING(buf->bytes);
    buf->cap = cap;
    return DONE;
}

static void
free_buffer(Buffer *buf)
{
    if (buf->bytes != NULL) {
        Py_CLEAR(buf->bytes);
    }
    else {
        PyMem_Free(buf->data);
    }
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

/* Room for `extra` more bytes, doubling; sizes checked against overflow before any arithmetic. */
static int
reserve(Buffer *buf, Py_ssize_t extra)
{
    if (extra < 0 || extra > PY_SSIZE_T_MAX - buf->len) {
        PyErr_NoMemory();
        return FAILED;
    }
    Py_ssize_t need = buf->len + extra;
    if (need <= buf->cap) {
        return DONE;
    }
    Py_ssize_t cap = buf->cap > 0 ? buf->cap : 1024;  /* a gateway span: 300-900 bytes */
    while (cap < need) {
        cap = cap > PY_SSIZE_T_MAX / 2 ? need : cap * 2;
    }
    if (buf->bytes != NULL) {  /* only this function holds it (refcount 1): resizable */
        if (_PyBytes_Resize(&buf->bytes, cap) < 0) {  /* released on failure: the buffer is empty */
            buf->data = NULL;
            buf->len = buf->cap = 0;
            return FAILED;
        }
        buf->data = (unsigned char *)PyBytes_AS_STRING(buf->bytes);
        buf->cap = cap;
        return DONE;
    }
    unsigned char *data = PyMem_Realloc(buf->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return FAILED;
    }
    buf->data = data;
    buf->cap = cap;
    return DONE;
}

/* The writers below check the room they need (reserve() is their slow path), then write: a span is
 * ~100 small writes, so they are inline and a byte is one comparison and one store. */

static inline int
room(Buffer *buf, Py_ssize_t size)
{
    if (size < 0 || size > buf->cap - buf->len) {
        return reserve(buf, size);  /* a negative size is refused there */
    }
    return DONE;
}

static inline int
put(Buffer *buf, const void *bytes, Py_ssize_t size)
{
    if (room(buf, size) < 0) {
        return FAILED;
    }
    if (size > 0) {
        memcpy(buf->data + buf->len, bytes, (size_t)size);
        buf->len += size;
    }
    return DONE;
}

static inline int
put_byte(Buffer *buf, unsigned char byte)
{
    if (room(buf, 1) < 0) {
        return FAILED;
    }
    buf->data[buf->len++] = byte;
    return DONE;
}

static inline Py_ssize_t
varint_size(uint64_t value)
{
    Py_ssize_t size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

/* Writes after room() was made for all of them (an attribute's whole field, whose size is
 * counted first): no check per byte. Each writes exactly the bytes varint_size() counts, at a cursor
 * (`at`, returned past them) the caller then stores as buf->len: a store through an unsigned char
 * pointer may alias buf's own fields, which the compiler would otherwise reload for every byte. */
static inline unsigned char *
write_byte(unsigned char *at, unsigned char byte)
{
    *at = byte;
    return at + 1;
}

static inline unsigned char *
write_varint(unsigned char *at, uint64_t value)
{
    while (value >= 0x80) {
        *at++ = (unsigned char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    *at++ = (unsigned char)value;
    return at;
}

static inline unsigned char *
write_bytes(unsigned char *at, const char *bytes, Py_ssize_t size)
{
    if (size > 0) {
        memcpy(at, bytes, (size_t)size);
        at += size;
    }
    return at;
}

/* A protobuf varint: 7 bits a byte, least significant first (at most 10 bytes for 64 bits). */
static inline int
put_varint(Buffer *buf, uint64_t value)
{
    if (room(buf, 10) < 0) {
        return FAILED;
    }
    buf->len = write_varint(buf->data + buf->len, value) - buf->data;
    return DONE;
}

/* fixed32 and fixed64 fields are little-endian (size 4 or 8); trace and span ids big-endian bytes.
 * One room check, then the bytes stored unrolled (no loop per byte). */
static inline int
put_le(Buffer *buf, uint64_t value, int size)
{
    if (size != 4 && size != 8) {
        PyErr_SetString(PyExc_SystemError, "_span_wire: a fixed field of another size");
        return FAILED;
    }
    if (room(buf, size) < 0) {
        return FAILED;
    }
    unsigned char *out = buf->data + buf->len;
    out[0] = (unsigned char)value;
    out[1] = (unsigned char)(value >> 8);
    out[2] = (unsigned char)(value >> 16);
    out[3] = (unsigned char)(value >> 24);
    if (size == 8) {
        out[4] = (unsigned char)(value >> 32);
        out[5] = (unsigned char)(value >> 40);
        out[6] = (unsigned char)(value >> 48);
        out[7] = (unsigned char)(value >> 56);
    }
    buf->len += size;
    return DONE;
}

/* After room() for its 8 bytes. */
static inline unsigned char *
write_be64(unsigned char *at, uint64_t value)
{
    for (int i = 0; i < 8; i++) {  /* a constant count: unrolled by the compiler */
        at[i] = (unsigned char)(value >> (56 - 8 * i));
    }
    return at + 8;
}

static inline int
put_be64(Buffer *buf, uint64_t value)
{
    if (room(buf, 8) < 0) {
        return FAILED;
    }
    buf->len = write_be64(buf->data + buf->len, value) - buf->data;
    return DONE;
}

/* -- reading Python values ---------------------------------------------------------------------- */

/* An expected conversion failure (an int beyond the field, a str that is not valid Unicode) means
 * "not this span": cleared and declined, so that Python meets it again and handles it its way.
 * Anything else (MemoryError) propagates. */
static int
decline_on(PyObject *expected)
{
    if (PyErr_ExceptionMatches(expected)) {
        PyErr_Clear();
        return DECLINED;
    }
    return FAILED;
}

/* A str's UTF-8 bytes: a compact ASCII str's own characters (no copy), else a bytes object owned here
 * (not the str's cached UTF-8, which would stay with a client's string as long as the string lives). */
typedef struct {
    const char *data;
    Py_ssize_t size;
    PyObject *owner;
} Utf8;

static inline int
utf8_of(PyObject *text, Utf8 *out)
{
    out->owner = NULL;
    if (!PyUnicode_CheckExact(text)) {
        return DECLINED;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) {  /* a legacy str made ready; a no-op from 3.12 */
        return FAILED;
    }
#endif
    if (PyUnicode_IS_COMPACT_ASCII(text)) {  /* most: one byte a character, its UTF-8 as it is */
        out->data = (const char *)PyUnicode_DATA(text);
        out->size = PyUnicode_GET_LENGTH(text);
        return DONE;
    }
    out->owner = PyUnicode_AsUTF8String(text);  /* UnicodeEncodeError for a lone surrogate */
    if (out->owner == NULL) {
        return decline_on(PyExc_UnicodeEncodeError);
    }
    out->data = PyBytes_AS_STRING(out->owner);
    out->size = PyBytes_GET_SIZE(out->owner);
    return DONE;
}

#if PY_VERSION_HEX < 0x030C0000
/* Python 3.11's int layout (Include/cpython/longintrepr.h): ob_size is the digit count, negative for a
 * negative number; digits of PyLong_SHIFT bits, least significant first. Read here digit by digit, the
 * ids and times being two to five digits: PyLong_AsUnsignedLongLong takes _PyLong_AsByteArray's ~190
 * instructions for any int of more than one digit, this ~20. Later versions' layout differs: there the
 * conversions below are the C API's. */
#define DIGITS_READABLE 1

/* The digits of an exact int into `words` 64-bit words (most significant first), DECLINED when it is
 * negative or does not fit. `count` is 1 or 2. */
static int
digits_into(PyObject *number, uint64_t *words, int count)
{
    Py_ssize_t size = Py_SIZE(number);
    if (size < 0) {
        return DECLINED;
    }
    const digit *digits = ((PyLongObject *)number)->ob_digit;
    uint64_t high = 0, low = 0;
    for (Py_ssize_t i = size - 1; i >= 0; i--) {  /* each digit below the ones read: shift them up */
        if (count == 1) {
            if (low >> (64 - PyLong_SHIFT)) {
                return DECLINED;  /* a bit would shift out: past 2**64 - 1 */
            }
            low = (low << PyLong_SHIFT) | (uint64_t)digits[i];
        }
        else {
            if (high >> (64 - PyLong_SHIFT)) {
                return DECLINED;  /* past 2**128 - 1 */
            }
            high = (high << PyLong_SHIFT) | (low >> (64 - PyLong_SHIFT));
            low = (low << PyLong_SHIFT) | (uint64_t)digits[i];
        }
    }
    if (count == 1) {
        words[0] = low;
    }
    else {
        words[0] = high;
        words[1] = low;
    }
    return DONE;
}
#else
#define DIGITS_READABLE 0
#endif

/* An exact int (not a bool) from 0 to 2**64 - 1. */
static int
uint64_of(PyObject *number, uint64_t *out)
{
    if (!PyLong_CheckExact(number)) {
        return DECLINED;
    }
#if DIGITS_READABLE
    return digits_into(number, out, 1);
#else
    unsigned long long value = PyLong_AsUnsignedLongLong(number);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) {
        return decline_on(PyExc_OverflowError);  /* negative, or too large */
    }
    *out = (uint64_t)value;
    return DONE;
#endif
}

/* A time: None or 0 is no field (as Python's truth test), else an exact int that fits fixed64. */
static int
time_of(PyObject *time, uint64_t *out)
{
    if (time == Py_None) {
        *out = 0;
        return DONE;
    }
    return uint64_of(time, out);
}

/* A 128-bit trace id (an exact int from 0 to 2**128 - 1) as its two 64-bit halves. */
static int
trace_id_of(PyObject *number, uint64_t *high, uint64_t *low)
{
    if (!PyLong_CheckExact(number)) {
        return DECLINED;
    }
#if DIGITS_READABLE
    uint64_t words[2];
    int read = digits_into(number, words, 2);
    if (read == DONE) {
        *high = words[0];
        *low = words[1];
    }
    return read;
#else
    PyObject *shift = PyLong_FromLong(64);
    if (shift == NULL) {
        return FAILED;
    }
    PyObject *upper = PyNumber_Rshift(number, shift);
    Py_DECREF(shift);
    if (upper == NULL) {
        return FAILED;
    }
    int result = uint64_of(upper, high);  /* declines a negative id, or one of more than 128 bits */
    Py_DECREF(upper);
    if (result != DONE) {
        return result;
    }
    *low = (uint64_t)PyLong_AsUnsignedLongLongMask(number);
    if (*low == (uint64_t)-1 && PyErr_Occurred()) {
        return FAILED;
    }
    return DONE;
#endif
}

/* A SpanContext is a tuple: (trace id, span id, is remote, flags, trace state, is valid). */
static int
context_of(PyObject *context, uint64_t *high, uint64_t *low, uint64_t *span_id)
{
    if (!PyTuple_Check(context) || PyTuple_GET_SIZE(context) != 6) {
        return DECLINED;
    }
    int result = trace_id_of(PyTuple_GET_ITEM(context, 0), high, low);
    if (result != DONE) {
        return result;
    }
    return uint64_of(PyTuple_GET_ITEM(context, 1), span_id);
}

/* Span.trace_id (field 1) and Span.span_id (field 2), or the same in a Span.Link. */
static int
put_ids(Buffer *buf, uint64_t high, uint64_t low, uint64_t span_id)
{
    if (room(buf, 2 + 16 + 2 + 8) < 0) {  /* then exactly these 28 bytes */
        return FAILED;
    }
    unsigned char *at = buf->data + buf->len;
    at = write_byte(at, 0x0a);
    at = write_byte(at, 0x10);
    at = write_be64(at, high);
    at = write_be64(at, low);
    at = write_byte(at, 0x12);
    at = write_byte(at, 0x08);
    at = write_be64(at, span_id);
    buf->len = at - buf->data;
    return DONE;
}

/* The attribute names read, interned once per module (module state, not globals). */
enum {
    CONTEXT, PARENT, NAME, KIND, START, END, ATTRIBUTES, DROPPED, EVENTS, LINKS, STATUS, /* a span's */
    LINK_ATTRIBUTES, LINK_CONTEXT, STATUS_CODE, DESCRIPTION, VALUE,                      /* the rest */
    RESOURCE, SCOPE,                                                   /* what a batch is grouped by */
    NAME_COUNT,
};

#define SPAN_FIELDS (STATUS + 1)

static const char *const NAMES[NAME_COUNT] = {
    "_context", "_parent", "_name", "_kind", "_start_time", "_end_time", "_attributes", "_dropped",
    "_events", "_links", "_status", "_attributes", "_context", "status_code", "description", "_value_",
    "_resource", "_instrumentation_scope",
};

/* SpanKind's members, by their value (INTERNAL 0 to CONSUMER 4). */
#define KIND_COUNT 5

/* A LeanSpan's 15 slots, all written when a span starts (start_owned), by name. */
enum {
    S_ATTRIBUTES, S_CONTEXT, S_DROPPED, S_END_TIME, S_EVENTS, S_SCOPE, S_KIND, S_LINKS, S_NAME, S_PARENT,
    S_PLAIN, S_RESOURCE, S_START_TIME, S_STATUS, S_TRACER,
    SLOT_COUNT,
};

/* The other names the span lifecycle reads (tracers', links', the batch queue's), interned once. */
enum {
    L_OWNED_ROOM = SLOT_COUNT, L_SCOPE, L_RESOURCE, L_ID_GENERATOR, L_MAX_LINKS, L_SAMPLED_END, L_SAMPLED_ENDS,
    L_ENDS, L_START_OWNED, L_GETRANDBITS, L_GENERATE_SPAN_ID, L_GENERATE_TRACE_ID, L_QUEUE, L_SHUTDOWN, L_PID,
    L_WORKER_AWAKEN, L_IS_SET, L_WAKE, L_APPENDLEFT, L_MAX_QUEUE_SIZE, L_MAX_EXPORT_BATCH_SIZE,
    LNAME_COUNT,
};

static const char *const LNAMES[LNAME_COUNT] = {
    "_attributes", "_context", "_dropped", "_end_time", "_events", "_instrumentation_scope", "_kind", "_links",
    "_name", "_parent", "_plain", "_resource", "_start_time", "_status", "_tracer",
    "owned_room", "scope", "resource", "id_generator", "max_links", "sampled_end", "sampled_ends", "ends",
    "start_owned", "getrandbits", "generate_span_id", "generate_trace_id", "_queue", "_shutdown", "_pid",
    "_worker_awaken", "is_set", "set", "appendleft", "_max_queue_size", "_max_export_batch_size",
};

/* What bind_lifecycle() is given: the types and shared values a started span is made of. */
enum {
    B_SPAN_CONTEXT, B_NON_RECORDING, B_LINK, B_NO_ATTRIBUTES, B_DEFAULT_STATUS, B_DEFAULT_TRACE_STATE,
    B_ROOT_FLAGS, B_CHILD_FLAGS, B_CONTEXT, B_VARIABLE, B_SPAN_KEY, B_RANDOM, B_END_OWN,
    BOUND_COUNT,
};

typedef struct {
    PyObject *names[NAME_COUNT];
    /* Set by bind(): the span type whose fields are __slots__ (a strong reference; NULL: none bound),
     * each field's offset in its instances, and the SpanKind members known by identity. */
    PyTypeObject *span_type;
    Py_ssize_t offsets[SPAN_FIELDS];
    Py_ssize_t group_offsets[2];  /* RESOURCE and SCOPE's slots (0: not slots, encode_spans declines) */
    PyObject *kinds[KIND_COUNT];
    /* The span lifecycle (start_owned, end_own, the batch queue): set by bind_lifecycle(), after bind()
     * found every slot (lifecycle 0: not bound, and its functions refuse). */
    PyObject *lnames[LNAME_COUNT];
    Py_ssize_t slots[SLOT_COUNT];
    PyObject *bound[BOUND_COUNT];
    PyObject *bits64, *bits128, *zero;
    int lifecycle;
} State;

/* A new reference to object.<NAMES[which]>, NULL with an exception set. */
static PyObject *
field(State *state, PyObject *object, int which)
{
    return PyObject_GetAttr(object, state->names[which]);
}

/* A new reference to a span's field `which` (< SPAN_FIELDS): its slot when the span is exactly the bound
 * type, else field(); NULL with an exception set (an empty slot: AttributeError, as getattr). */
static PyObject *
span_field(State *state, PyObject *span, int which)
{
    if (state->span_type == NULL || Py_TYPE(span) != state->span_type) {
        return field(state, span, which);
    }
    PyObject *value = *(PyObject **)((char *)span + state->offsets[which]);
    if (value == NULL) {
        PyErr_SetObject(PyExc_AttributeError, state->names[which]);
        return NULL;
    }
    return Py_NewRef(value);
}

/* -- the span's parts --------------------------------------------------------------------------- */

/* One Span.attributes entry (field 9): KeyValue{key (1), value (2): AnyValue{string (1) | int (3)}}.
 * A str or an int in int64 (not a bool, not an int subclass), under a str key; else declined. */
static int
put_attribute(Buffer *buf, PyObject *key, PyObject *value)
{
    Utf8 name, text = {NULL, 0, NULL};
    int result = utf8_of(key, &name);
    if (result != DONE) {
        return result;
    }
    uint64_t number = 0;
    Py_ssize_t any_size;
    if (PyUnicode_CheckExact(value)) {
        result = utf8_of(value, &text);
        if (result != DONE) {
            goto done;
        }
        any_size = 1 + varint_size((uint64_t)text.size) + text.size;
    }
    else if (PyLong_CheckExact(value)) {
        long long signed_number = PyLong_AsLongLong(value);
        if (signed_number == -1 && PyErr_Occurred()) {
            result = decline_on(PyExc_OverflowError);  /* beyond int64: Python logs and leaves it out */
            goto done;
        }
        number = (uint64_t)signed_number;  /* two's complement, as protobuf's int64 */
        any_size = 1 + varint_size(number);
    }
    else {
        result = DECLINED;  /* a bool, a float, a sequence, None: Python's encoder */
        goto done;
    }
    /* The sizes are of strings already in memory: far below PY_SSIZE_T_MAX, no overflow. */
    Py_ssize_t key_size = name.size > 0 ? 1 + varint_size((uint64_t)name.size) + name.size : 0;
    Py_ssize_t pair_size = key_size + 1 + varint_size((uint64_t)any_size) + any_size;
    Py_ssize_t field_size = 1 + varint_size((uint64_t)pair_size) + pair_size;
    /* Room for the whole field once, then its bytes written unchecked: exactly field_size of them. */
    result = FAILED;
    if (room(buf, field_size) < 0) {
        goto done;
    }
    unsigned char *at = buf->data + buf->len, *end = at + field_size;
    at = write_byte(at, 0x4a);
    at = write_varint(at, (uint64_t)pair_size);
    if (name.size > 0) {  /* an empty key has no field: protobuf leaves out an empty string */
        at = write_byte(at, 0x0a);
        at = write_varint(at, (uint64_t)name.size);
        at = write_bytes(at, name.data, name.size);
    }
    at = write_byte(at, 0x12);
    at = write_varint(at, (uint64_t)any_size);
    if (text.data != NULL) {  /* a string value, even empty: a oneof case is always written */
        at = write_byte(at, 0x0a);
        at = write_varint(at, (uint64_t)text.size);
        at = write_bytes(at, text.data, text.size);
    }
    else {
        at = write_byte(at, 0x18);
        at = write_varint(at, number);
    }
    if (at != end) {  /* the count above and the writes disagree: a bug, never a wrong field sent */
        PyErr_SetString(PyExc_SystemError, "_span_wire: an attribute's size was miscounted");
        goto done;
    }
    buf->len += field_size;
    result = DONE;
done:
    Py_XDECREF(name.owner);
    Py_XDECREF(text.owner);
    return result;
}

static int
put_attributes(Buffer *buf, PyObject *attributes)
{
    if (!PyDict_CheckExact(attributes)) {  /* an empty mapping (NO_ATTRIBUTES) has no field; others: Python */
        int truth = PyObject_IsTrue(attributes);
        return truth < 0 ? FAILED : truth ? DECLINED : DONE;
    }
    Py_ssize_t position = 0;
    PyObject *key, *value;
    /* Nothing below runs Python code (exact str and int only), so the dict cannot change meanwhile;
     * each item is held all the same. */
    while (PyDict_Next(attributes, &position, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        int result = put_attribute(buf, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (result != DONE) {
            return result;
        }
    }
    return DONE;
}

/* Span.links (field 13): links without attributes (NO_ATTRIBUTES) only, as ids and flags. */
static int
put_links(State *state, Buffer *buf, PyObject *links, PyObject *no_attributes)
{
    if (!PyTuple_CheckExact(links)) {
        return DECLINED;  /* a BoundedList: some were dropped */
    }
    /* The tuple is held by the caller and cannot change: its items stay alive. */
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(links); i++) {
        PyObject *link = PyTuple_GET_ITEM(links, i);
        PyObject *attributes = field(state, link, LINK_ATTRIBUTES);
        if (attributes == NULL) {
            return FAILED;
        }
        int plain = attributes == no_attributes;
        Py_DECREF(attributes);
        if (!plain) {
            return DECLINED;
        }
        PyObject *context = field(state, link, LINK_CONTEXT);
        if (context == NULL) {
            return FAILED;
        }
        uint64_t high, low, span_id;
        int result = context_of(context, &high, &low, &span_id);
        int remote = result == DONE ? PyObject_IsTrue(PyTuple_GET_ITEM(context, 2)) : 0;
        Py_DECREF(context);
        if (result != DONE) {
            return result;
        }
        if (remote < 0) {
            return FAILED;
        }
        /* tag 13, then 33 bytes: the ids (18 and 10) and Link.flags (field 7, fixed32: 5) */
        if (put_byte(buf, 0x6a) < 0 || put_byte(buf, 18 + 10 + 5) < 0 || put_ids(buf, high, low, span_id) < 0
            || put_byte(buf, 0x35) < 0 || put_le(buf, remote ? 0x300 : 0x100, 4) < 0) {
            return FAILED;
        }
    }
    return DONE;
}

/* An enum member's value (SpanKind, StatusCode) from 0 to `most`; declined otherwise. */
static int
enum_value(State *state, PyObject *member, long most, long *out)
{
    PyObject *value = field(state, member, VALUE);
    if (value == NULL) {
        return FAILED;
    }
    int result = DECLINED;
    if (PyLong_CheckExact(value)) {
        *out = PyLong_AsLong(value);
        if (*out == -1 && PyErr_Occurred()) {
            result = decline_on(PyExc_OverflowError);
        }
        else if (*out >= 0 && *out <= most) {
            result = DONE;
        }
    }
    Py_DECREF(value);
    return result;
}

/* Span.status (field 15): Status{message (2), code (3)}, always present (empty when unset). */
static int
put_status(State *state, Buffer *buf, PyObject *status, PyObject *default_status)
{
    if (status == default_status) {
        return put_byte(buf, 0x7a) < 0 || put_byte(buf, 0x00) < 0 ? FAILED : DONE;
    }
    PyObject *code_member = field(state, status, STATUS_CODE);
    if (code_member == NULL) {
        return FAILED;
    }
    long code;
    int result = enum_value(state, code_member, 2, &code);  /* UNSET 0, OK 1, ERROR 2 */
    Py_DECREF(code_member);
    if (result != DONE) {
        return result;
    }
    PyObject *description = field(state, status, DESCRIPTION);
    if (description == NULL) {
        return FAILED;
    }
    /* `description` is held until written: an ASCII message's bytes are the str's own. */
    Utf8 message = {NULL, 0, NULL};
    result = description == Py_None ? DONE : utf8_of(description, &message);
    if (result != DONE) {
        goto done;
    }
    Py_ssize_t size = (message.size > 0 ? 1 + varint_size((uint64_t)message.size) + message.size : 0)
                      + (code ? 2 : 0);
    result = FAILED;
    if (put_byte(buf, 0x7a) < 0 || put_varint(buf, (uint64_t)size) < 0) {
        goto done;
    }
    if (message.size > 0
        && (put_byte(buf, 0x12) < 0 || put_varint(buf, (uint64_t)message.size) < 0
            || put(buf, message.data, message.size) < 0)) {
        goto done;
    }
    if (code && (put_byte(buf, 0x18) < 0 || put_byte(buf, (unsigned char)code) < 0)) {
        goto done;
    }
    result = DONE;
done:
    Py_XDECREF(message.owner);
    Py_DECREF(description);
    return result;
}

/* -- the span ----------------------------------------------------------------------------------- */

/* The Span message's fields, in field-number order: what follows the ScopeSpans.spans tag and length.
 * `f` holds the span's fields (by the enum's first SPAN_FIELDS names), each a reference the caller holds. */
static int
put_span(State *state, Buffer *buf, PyObject *const *f, PyObject *default_status,
         PyObject *default_trace_state, PyObject *no_attributes)
{
    int result, truth;
    /* Events (a tuple only while there are none) or dropped attributes: Python's general path. */
    if (!PyTuple_CheckExact(f[EVENTS]) || PyTuple_GET_SIZE(f[EVENTS]) != 0) {
        return DECLINED;
    }
    if ((truth = PyObject_IsTrue(f[DROPPED])) != 0) {
        return truth < 0 ? FAILED : DECLINED;
    }
    uint64_t high, low, span_id;
    if ((result = context_of(f[CONTEXT], &high, &low, &span_id)) != DONE) {
        return result;
    }
    PyObject *trace_state = PyTuple_GET_ITEM(f[CONTEXT], 4);
    if (trace_state != default_trace_state && (truth = PyObject_IsTrue(trace_state)) != 0) {
        return truth < 0 ? FAILED : DECLINED;  /* a trace state (field 3): Python writes it */
    }
    if (put_ids(buf, high, low, span_id) < 0) {
        return FAILED;
    }
    int remote = 0;
    PyObject *parent = f[PARENT];
    if (parent != Py_None) {  /* Span.parent_span_id (field 4) */
        uint64_t parent_id;
        if (!PyTuple_Check(parent) || PyTuple_GET_SIZE(parent) != 6) {
            return DECLINED;
        }
        if ((result = uint64_of(PyTuple_GET_ITEM(parent, 1), &parent_id)) != DONE) {
            return result;
        }
        if ((remote = PyObject_IsTrue(PyTuple_GET_ITEM(parent, 2))) < 0) {
            return FAILED;
        }
        if (put_byte(buf, 0x22) < 0 || put_byte(buf, 0x08) < 0 || put_be64(buf, parent_id) < 0) {
            return FAILED;
        }
    }
    Utf8 name;  /* Span.name (field 5), only when not empty */
    if ((result = utf8_of(f[NAME], &name)) != DONE) {
        return result;
    }
    if (name.size > 0
        && (put_byte(buf, 0x2a) < 0 || put_varint(buf, (uint64_t)name.size) < 0
            || put(buf, name.data, name.size) < 0)) {
        result = FAILED;
    }
    Py_XDECREF(name.owner);
    if (result != DONE) {
        return result;
    }
    long kind = -1;  /* Span.kind (field 6): the API's enum (INTERNAL 0 to CONSUMER 4) + 1 */
    for (int i = 0; i < KIND_COUNT; i++) {
        if (state->kinds[i] != NULL && f[KIND] == state->kinds[i]) {  /* a bound member: its value, no lookup */
            kind = i;
            break;
        }
    }
    if (kind < 0 && (result = enum_value(state, f[KIND], KIND_COUNT - 1, &kind)) != DONE) {
        return result;
    }
    if (put_byte(buf, 0x30) < 0 || put_byte(buf, (unsigned char)(kind + 1)) < 0) {
        return FAILED;
    }
    uint64_t start, end;  /* start_time_unix_nano (field 7), end_time_unix_nano (8): fixed64, if set */
    if ((result = time_of(f[START], &start)) != DONE || (result = time_of(f[END], &end)) != DONE) {
        return result;
    }
    if (start && (put_byte(buf, 0x39) < 0 || put_le(buf, start, 8) < 0)) {
        return FAILED;
    }
    if (end && (put_byte(buf, 0x41) < 0 || put_le(buf, end, 8) < 0)) {
        return FAILED;
    }
    if ((result = put_attributes(buf, f[ATTRIBUTES])) != DONE) {
        return result;
    }
    if ((result = put_links(state, buf, f[LINKS], no_attributes)) != DONE) {
        return result;
    }
    if ((result = put_status(state, buf, f[STATUS], default_status)) != DONE) {
        return result;
    }
    /* Span.flags (field 16, fixed32): has-is-remote, and is-remote for a remote parent */
    if (put_byte(buf, 0x85) < 0 || put_byte(buf, 0x01) < 0 || put_le(buf, remote ? 0x300 : 0x100, 4) < 0) {
        return FAILED;
    }
    return DONE;
}

/* A ScopeSpans.spans field's tag and the length's varint, written before the Span once its size is known:
 * room is left for a two-byte length (a span under 16 KiB, the gateway's), the Span moved when it differs. */
#define HEAD_ROOM 3

/* One ScopeSpans.spans field (tag, length, Span) of `span` appended to `buf`; when declined (or failed), `buf`
 * is left as it was. `defaults`: default_status, default_trace_state, no_attributes. */
static int
put_span_field(State *state, Buffer *buf, PyObject *span, PyObject *const *defaults)
{
    PyObject *fields[SPAN_FIELDS] = {NULL};  /* a fixed count of references, not variable data */
    Py_ssize_t start = buf->len;
    int result = FAILED;
    int bound = state->span_type != NULL && Py_TYPE(span) == state->span_type;
    for (int i = 0; i < SPAN_FIELDS; i++) {
        PyObject *value = bound ? *(PyObject **)((char *)span + state->offsets[i]) : NULL;
        if (value != NULL) {  /* a slot read in place */
            fields[i] = Py_NewRef(value);
        }
        else if ((fields[i] = span_field(state, span, i)) == NULL) {  /* by attribute, or an empty slot's error */
            goto done;
        }
    }
    if (room(buf, HEAD_ROOM) < 0) {
        goto done;
    }
    buf->len += HEAD_ROOM;
    result = put_span(state, buf, fields, defaults[0], defaults[1], defaults[2]);
    if (result != DONE) {
        goto done;
    }
    Py_ssize_t body = start + HEAD_ROOM, size = buf->len - body;
    Py_ssize_t head_size = 1 + varint_size((uint64_t)size), shift = head_size - HEAD_ROOM;
    if (shift > 0 && room(buf, shift) < 0) {  /* a span of 16 KiB or more: its length takes more bytes */
        result = FAILED;
        goto done;
    }
    if (shift != 0) {
        memmove(buf->data + body + shift, buf->data + body, (size_t)size);
        buf->len += shift;
    }
    unsigned char *at = write_byte(buf->data + start, 0x12);  /* the head, in the room left for it */
    at = write_varint(at, (uint64_t)size);
    buf->len = (at - buf->data) + size;
done:
    if (result != DONE) {
        buf->len = start;
    }
    for (int i = 0; i < SPAN_FIELDS; i++) {
        Py_XDECREF(fields[i]);
    }
    return result;
}

/* encode_span(span, default_status, default_trace_state, no_attributes, /) -> bytes | None */
static PyObject *
encode_span(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "encode_span() takes 4 positional arguments (%zd given)", nargs);
        return NULL;
    }
    State *state = PyModule_GetState(module);
    if (state == NULL) {
        return NULL;
    }
    Buffer buf = {NULL, 0, 0, NULL};
    PyObject *out = NULL;
    int result = put_span_field(state, &buf, args[0], args + 1);
    if (result == DECLINED) {
        out = Py_NewRef(Py_None);
    }
    else if (result == DONE) {
        out = PyBytes_FromStringAndSize((const char *)buf.data, buf.len);
    }
    free_buffer(&buf);
    return out;
}

/* A span's resource or scope slot (`which`: 0 or 1), borrowed; NULL when empty (no exception). */
static inline PyObject *
group_of(State *state, PyObject *span, int which)
{
    return *(PyObject **)((char *)span + state->group_offsets[which]);
}

/* Appends buf[from:] to `parts` as one bytes object (nothing when empty). */
static int
append_run(PyObject *parts, const Buffer *buf, Py_ssize_t from)
{
    if (buf->len == from) {
        return 0;
    }
    PyObject *run = PyBytes_FromStringAndSize((const char *)buf->data + from, buf->len - from);
    if (run == NULL) {
        return -1;
    }
    int failed = PyList_Append(parts, run);
    Py_DECREF(run);
    return failed;
}

/* The batch of `spans` (a tuple the caller holds) whose spans were checked to be all of the bound type, with
 * the same resource and scope: its ScopeSpans.spans fields, in order, as a list of bytes (each a run of
 * fields written here) and spans (each one declined, for Python). NULL: an exception, or Py_None when a span
 * no longer has the batch's resource and scope (changed by code a span's encoding ran: Python groups it). */
static PyObject *
encode_batch(State *state, PyObject *spans, PyObject *resource, PyObject *scope, PyObject *const *defaults)
{
    Py_ssize_t count = PyTuple_GET_SIZE(spans);
    Buffer buf = {NULL, 0, 0, NULL};
    PyObject *parts = PyList_New(0);
    if (parts == NULL) {
        return NULL;
    }
    /* A gateway span is 300-900 bytes: room for most batches at once (reserve() grows it past that). */
    if (bytes_buffer(&buf, count < (1 << 16) ? count * 640 : (Py_ssize_t)1 << 22) < 0) {
        goto failed;
    }
    Py_ssize_t run = 0;  /* where the fields not yet in `parts` start */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *span = PyTuple_GET_ITEM(spans, i);
        if (Py_TYPE(span) != state->span_type || group_of(state, span, 0) != resource
            || group_of(state, span, 1) != scope) {
            Py_DECREF(parts);
            free_buffer(&buf);
            Py_RETURN_NONE;
        }
        int result = put_span_field(state, &buf, span, defaults);
        if (result == FAILED) {
            goto failed;
        }
        if (result == DECLINED) {
            if (append_run(parts, &buf, run) < 0 || PyList_Append(parts, span) < 0) {
                goto failed;
            }
            run = buf.len;
        }
    }
    if (run == 0 && buf.len > 0) {  /* the usual batch, every span written: the buffer itself, no copy */
        if (_PyBytes_Resize(&buf.bytes, buf.len) < 0) {
            buf.data = NULL;  /* freed with the bytes object: free_buffer must not free it again */
            goto failed;
        }
        int failed = PyList_Append(parts, buf.bytes);
        free_buffer(&buf);
        if (failed) {
            goto failed;
        }
        return parts;
    }
    if (append_run(parts, &buf, run) < 0) {
        goto failed;
    }
    free_buffer(&buf);
    return parts;
failed:
    Py_DECREF(parts);
    free_buffer(&buf);
    return NULL;
}

/* encode_spans(spans, default_status, default_trace_state, no_attributes, /)
 *     -> tuple[resource, scope, list[bytes | span]] | None */
static PyObject *
encode_spans(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "encode_spans() takes 4 positional arguments (%zd given)", nargs);
        return NULL;
    }
    State *state = PyModule_GetState(module);
    if (state == NULL) {
        return NULL;
    }
    if (state->span_type == NULL || state->group_offsets[0] == 0 || state->group_offsets[1] == 0
        || !(PyList_CheckExact(args[0]) || PyTuple_CheckExact(args[0]))) {
        Py_RETURN_NONE;
    }
    /* A tuple: what a span's encoding may run (a __bool__) cannot change the batch meanwhile. */
    PyObject *spans = PySequence_Tuple(args[0]);
    if (spans == NULL) {
        return NULL;
    }
    PyObject *out = NULL, *parts = NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(spans);
    PyObject *resource = NULL, *scope = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {  /* not this batch: Python groups it (no span encoded twice) */
        PyObject *span = PyTuple_GET_ITEM(spans, i);
        if (Py_TYPE(span) != state->span_type) {
            goto none;
        }
        if (i == 0) {
            resource = group_of(state, span, 0);
            scope = group_of(state, span, 1);
            if (resource == NULL || scope == NULL) {
                goto none;
            }
        }
        else if (group_of(state, span, 0) != resource || group_of(state, span, 1) != scope) {
            goto none;
        }
    }
    if (count == 0) {
        goto none;
    }
    Py_INCREF(resource);  /* held: a span's encoding could run code that replaces the slots */
    Py_INCREF(scope);
    parts = encode_batch(state, spans, resource, scope, args + 1);
    if (parts != NULL && parts != Py_None) {
        out = PyTuple_Pack(3, resource, scope, parts);
    }
    else if (parts == Py_None) {
        out = Py_NewRef(Py_None);
    }
    Py_XDECREF(parts);
    Py_DECREF(resource);
    Py_DECREF(scope);
    Py_DECREF(spans);
    return out;
none:
    Py_DECREF(spans);
    Py_RETURN_NONE;
}

/* The offset of `span_type`'s own __slots__ field `name`: a member descriptor in its __dict__, of a
 * T_OBJECT_EX field that lies within the instance. 0: not such a field (no exception); -1: an error. */
static Py_ssize_t
slot_offset(PyTypeObject *span_type, PyObject *name)
{
    PyObject *descriptor = PyDict_GetItemWithError(span_type->tp_dict, name);  /* borrowed */
    if (descriptor == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (!Py_IS_TYPE(descriptor, &PyMemberDescr_Type)
        || ((PyDescrObject *)descriptor)->d_type != span_type) {
        return 0;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
    if (member == NULL || member->type != T_OBJECT_EX || member->offset < (Py_ssize_t)sizeof(PyObject)
        || member->offset > span_type->tp_basicsize - (Py_ssize_t)sizeof(PyObject *)) {
        return 0;
    }
    return member->offset;
}

/* bind(span_type, kinds, /) -> bool */
static PyObject *
bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "bind() takes 2 positional arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "bind() needs the span type");
        return NULL;
    }
    if (!PyTuple_CheckExact(args[1]) || PyTuple_GET_SIZE(args[1]) != KIND_COUNT) {
        PyErr_Format(PyExc_TypeError, "bind() needs a tuple of the %d SpanKind members", KIND_COUNT);
        return NULL;
    }
    State *state = PyModule_GetState(module);
    if (state == NULL) {
        return NULL;
    }
    PyTypeObject *span_type = (PyTypeObject *)args[0];
    Py_ssize_t offsets[SPAN_FIELDS];
    int bound = 1;
    for (int i = 0; i < SPAN_FIELDS && bound; i++) {
        offsets[i] = slot_offset(span_type, state->names[i]);
        if (offsets[i] < 0) {
            return NULL;
        }
        bound = offsets[i] > 0;
    }
    /* Replaced whole (or dropped: a type without those slots is read by attribute, as before); the
     * lifecycle is bound again for the new type. */
    state->lifecycle = 0;
    Py_CLEAR(state->span_type);
    for (int i = 0; i < KIND_COUNT; i++) {
        Py_XSETREF(state->kinds[i], Py_NewRef(PyTuple_GET_ITEM(args[1], i)));
    }
    if (!bound) {
        Py_RETURN_FALSE;
    }
    for (int i = 0; i < 2; i++) {
        Py_ssize_t offset = slot_offset(span_type, state->names[RESOURCE + i]);
        if (offset < 0) {
            return NULL;
        }
        state->group_offsets[i] = offset;
    }
    memcpy(state->offsets, offsets, sizeof(offsets));
    state->span_type = (PyTypeObject *)Py_NewRef(args[0]);
    Py_RETURN_TRUE;
}

/* -- the span lifecycle: start_owned, end_own, the batch queue ----------------------------------- *
 *
 * C versions of the usual paths of LeanTracer.start_owned, lean_spans.end_own and
 * lean_provider._queue_into's queue, which stay the reference and the fallback: whenever the Python
 * path would leave its own fast path (another sampler, a start processor, limits, a non-lean parent,
 * links other than the one usual link, an ended span, a full queue, ...) or reads something unexpected,
 * the Python function is called instead, before anything was changed or drawn. Ids come from the
 * tracer's id generator: drawn here when it is this module's Ids (below), else from random.getrandbits
 * (the SDK's RandomIdGenerator, looked up per call, as Python does: seeding and patching act the same); the
 * time from the clock time.time_ns reads. A tracer's fields are read from its __dict__ at each call: a
 * processor added later changes owned_room and sampled_end for the next span. */

/* A new reference to object.name, from `dict` (the object's __dict__, or NULL) first. */
static PyObject *
attr_of(PyObject *dict, PyObject *object, PyObject *name)
{
    if (dict != NULL) {
        PyObject *value = PyDict_GetItemWithError(dict, name);  /* borrowed */
        if (value != NULL) {
            return Py_NewRef(value);
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    return PyObject_GetAttr(object, name);
}

/* A new reference to an instance's __dict__ (NULL, no exception: it has none). */
static PyObject *
dict_of(PyObject *object)
{
    PyObject *dict = PyObject_GenericGetDict(object, NULL);
    if (dict == NULL || !PyDict_Check(dict)) {
        PyErr_Clear();
        Py_XDECREF(dict);
        return NULL;
    }
    return dict;
}

/* time.time_ns(): the same clock, without the call. */
static PyObject *
now_ns(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t now;
    if (PyTime_Time(&now) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong((long long)now);
#else
    return PyLong_FromLongLong((long long)_PyTime_GetSystemClock());
#endif
}

/* A slot of a span of the bound type: borrowed, NULL when empty (no exception). */
static inline PyObject *
slot_get(State *state, PyObject *span, int which)
{
    return *(PyObject **)((char *)span + state->slots[which]);
}

/* Sets an empty slot of a new span (steals `value`). */
static inline void
slot_init(State *state, PyObject *span, int which, PyObject *value)
{
    PyObject **slot = (PyObject **)((char *)span + state->slots[which]);
    Py_XSETREF(*slot, value);
}

/* -- ids: the extension's own generator (Ids) -------------------------------------------------------- *
 *
 * xoshiro256** (Blackman and Vigna, 2018): 256 bits of state per process, seeded from os.urandom at the
 * first draw and again at the first draw in a forked child (pthread_atfork): no two processes draw the same ids.
 * Not a cryptographic generator, as the SDK's RandomIdGenerator (random.getrandbits, a Mersenne Twister) is
 * not: trace and span ids need to be unique and unguessable in practice, not secret. A draw is a few
 * instructions where random.getrandbits through a call took ~850. The GIL is held throughout: one stream. */

static uint64_t ids_state[4];
static int ids_seeded;  /* 0: seed before the next draw (at the first, and the first in a forked child) */

#ifndef _WIN32
#include <pthread.h>
static int ids_fork_handler;  /* pthread_atfork is called once per process, whatever the module instances */

static void
ids_after_fork_in_child(void)
{
    ids_seeded = 0;  /* the parent's state, copied: the child must not draw the parent's next ids */
}
#endif

static inline uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* The next 64 bits (xoshiro256**); the state seeded. */
static inline uint64_t
next_bits(void)
{
    uint64_t *s = ids_state;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Seeds the state from os.urandom(32) when it is not (an exception set: -1). */
static int
seed_ids(void)
{
    if (ids_seeded) {
        return 0;
    }
    PyObject *os = PyImport_ImportModule("os");
    if (os == NULL) {
        return -1;
    }
    PyObject *seed = PyObject_CallMethod(os, "urandom", "i", (int)sizeof(ids_state));
    Py_DECREF(os);
    if (seed == NULL) {
        return -1;
    }
    if (!PyBytes_Check(seed) || PyBytes_GET_SIZE(seed) != (Py_ssize_t)sizeof(ids_state)) {
        Py_DECREF(seed);
        PyErr_SetString(PyExc_RuntimeError, "_span_wire: os.urandom gave no 32 bytes");
        return -1;
    }
    memcpy(ids_state, PyBytes_AS_STRING(seed), sizeof(ids_state));
    Py_DECREF(seed);
    if ((ids_state[0] | ids_state[1] | ids_state[2] | ids_state[3]) == 0) {
        ids_state[0] = 1;  /* the one state xoshiro never leaves (2**-256) */
    }
    ids_seeded = 1;
    return 0;
}

/* A new span id: an int of 1 to 2**64 - 1 (0 is invalid: drawn again). */
static PyObject *
new_span_id(void)
{
    if (seed_ids() < 0) {
        return NULL;
    }
    uint64_t id;
    do {
        id = next_bits();
    } while (id == 0);
    return PyLong_FromUnsignedLongLong(id);
}

/* A new trace id: an int of 1 to 2**128 - 1 (0 is invalid: drawn again). */
static PyObject *
new_trace_id(void)
{
    if (seed_ids() < 0) {
        return NULL;
    }
    uint64_t high, low;
    do {
        high = next_bits();
        low = next_bits();
    } while ((high | low) == 0);
#if DIGITS_READABLE
    /* Python 3.11's layout (digits_into above): the digits written, least significant first, where
     * _PyLong_FromByteArray took ~500 instructions. */
    digit digits[(128 + PyLong_SHIFT - 1) / PyLong_SHIFT];
    Py_ssize_t size = 0;
    while (high | low) {
        digits[size++] = (digit)(low & PyLong_MASK);
        low = (low >> PyLong_SHIFT) | (high << (64 - PyLong_SHIFT));
        high >>= PyLong_SHIFT;
    }
    PyLongObject *id = _PyLong_New(size);
    if (id == NULL) {
        return NULL;
    }
    memcpy(id->ob_digit, digits, (size_t)size * sizeof(digit));
    return (PyObject *)id;
#else
    PyObject *upper = PyLong_FromUnsignedLongLong(high), *lower = PyLong_FromUnsignedLongLong(low);
    PyObject *shift = PyLong_FromLong(64), *shifted = NULL, *id = NULL;
    if (upper != NULL && lower != NULL && shift != NULL && (shifted = PyNumber_Lshift(upper, shift)) != NULL) {
        id = PyNumber_Or(shifted, lower);
    }
    Py_XDECREF(upper);
    Py_XDECREF(lower);
    Py_XDECREF(shift);
    Py_XDECREF(shifted);
    return id;
#endif
}

typedef struct {
    PyObject_HEAD
} Ids;

static PyObject *
ids_generate_span_id(PyObject *self, PyObject *unused)
{
    return new_span_id();
}

static PyObject *
ids_generate_trace_id(PyObject *self, PyObject *unused)
{
    return new_trace_id();
}

static PyObject *
ids_is_trace_id_random(PyObject *self, PyObject *unused)
{
    Py_RETURN_TRUE;  /* W3C Trace Context level 2's random-trace-id flag: every bit of it drawn */
}

static PyMethodDef ids_methods[] = {
    {"generate_span_id", ids_generate_span_id, METH_NOARGS, "generate_span_id()\n--\n\nA new span id (64 bits, not 0)."},
    {"generate_trace_id", ids_generate_trace_id, METH_NOARGS,
     "generate_trace_id()\n--\n\nA new trace id (128 bits, not 0)."},
    {"is_trace_id_random", ids_is_trace_id_random, METH_NOARGS,
     "is_trace_id_random()\n--\n\nTrue: the trace ids are random (W3C's random-trace-id flag)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject IdsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asgi_ws_gateway.telemetry._span_wire.Ids",
    .tp_doc = "Ids(): an OpenTelemetry id generator (generate_span_id, generate_trace_id) drawing from the\n"
              "extension's per-process xoshiro256** stream, seeded from os.urandom and again after a fork.",
    .tp_basicsize = sizeof(Ids),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_methods = ids_methods,
};

/* -- ids as hex text: the access line's and the connection span's ids, the traceparent header ---------- */

static const char HEX_DIGITS[] = "0123456789abcdef";

/* `value`'s 16 hex digits (most significant first) at `at`. */
static inline Py_UCS1 *
write_hex64(Py_UCS1 *at, uint64_t value)
{
    for (int shift = 60; shift >= 0; shift -= 4) {
        *at++ = (Py_UCS1)HEX_DIGITS[(value >> shift) & 0xF];
    }
    return at;
}

/* id.to_bytes(size, "big").hex() as Python does it (an int of another type, or its error). */
static PyObject *
hex_in_python(PyObject *id, int size)
{
    PyObject *bytes = PyObject_CallMethod(id, "to_bytes", "is", size, "big");
    if (bytes == NULL) {
        return NULL;
    }
    PyObject *text = PyObject_CallMethod(bytes, "hex", NULL);
    Py_DECREF(bytes);
    return text;
}

/* A trace id's 32 or a span id's 16 hex digits: id.to_bytes(16 or 8, "big").hex(). */
static PyObject *
hex_id(PyObject *id, int trace)
{
    uint64_t words[2];
    int read = trace ? trace_id_of(id, &words[0], &words[1]) : uint64_of(id, &words[0]);
    if (read == FAILED) {
        return NULL;
    }
    if (read == DECLINED) {
        return hex_in_python(id, trace ? 16 : 8);
    }
    PyObject *text = PyUnicode_New(trace ? 32 : 16, 127);
    if (text == NULL) {
        return NULL;
    }
    Py_UCS1 *at = PyUnicode_1BYTE_DATA(text);
    at = write_hex64(at, words[0]);
    if (trace) {
        write_hex64(at, words[1]);
    }
    return text;
}

/* A SpanContext (a 6-tuple); a TypeError otherwise. */
static int
span_context_check(PyObject *context)
{
    if (!PyTuple_Check(context) || PyTuple_GET_SIZE(context) != 6) {
        PyErr_SetString(PyExc_TypeError, "a SpanContext (a tuple of 6) is needed");
        return -1;
    }
    return 0;
}

/* hex_ids(context, /) -> (trace id, span id) as hex text */
static PyObject *
hex_ids(PyObject *module, PyObject *context)
{
    if (span_context_check(context) < 0) {
        return NULL;
    }
    PyObject *trace_id = hex_id(PyTuple_GET_ITEM(context, 0), 1);
    if (trace_id == NULL) {
        return NULL;
    }
    PyObject *span_id = hex_id(PyTuple_GET_ITEM(context, 1), 0);
    if (span_id == NULL) {
        Py_DECREF(trace_id);
        return NULL;
    }
    PyObject *both = PyTuple_Pack(2, trace_id, span_id);
    Py_DECREF(trace_id);
    Py_DECREF(span_id);
    return both;
}

/* trace_names(headers, masks, /) -> int or None: propagation._filtered's answer for the names of `headers` (a
 * list of (name, value) tuples) as a bit mask, without the names' tuple, map and lookup that Python builds for it:
 * the OR of `masks` (an exact dict: a name's bits, 1 for an untrusted client's request, 2 for a trusted one's) of
 * each name found in it, and 1 for a name that starts "uberctx-" or "ot-baggage-". None (decided in Python) for
 * anything but exact str names of ASCII without upper-case letters or control characters (whose lower-casing,
 * or a line break read as a separator, Python's answer depends on), or another shape. Reads only: no Python code
 * runs while it walks the list (exact str hashes and equality, an exact dict). */
static PyObject *
trace_names(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "trace_names() takes 2 positional arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *headers = args[0], *masks = args[1];
    if (!PyList_CheckExact(headers) || !PyDict_CheckExact(masks)) {
        Py_RETURN_NONE;
    }
    long mask = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
        PyObject *header = PyList_GET_ITEM(headers, i);
        if (!PyTuple_CheckExact(header) || PyTuple_GET_SIZE(header) < 1) {
            Py_RETURN_NONE;
        }
        PyObject *name = PyTuple_GET_ITEM(header, 0);
        if (!PyUnicode_CheckExact(name) || !PyUnicode_IS_ASCII(name)) {
            Py_RETURN_NONE;
        }
        const Py_UCS1 *text = PyUnicode_1BYTE_DATA(name);
        Py_ssize_t length = PyUnicode_GET_LENGTH(name);
        for (Py_ssize_t at = 0; at < length; at++) {
            if (text[at] < 0x20 || text[at] == 0x7F || (text[at] >= 'A' && text[at] <= 'Z')) {
                Py_RETURN_NONE;
            }
        }
        if ((length >= 8 && memcmp(text, "uberctx-", 8) == 0)
            || (length >= 11 && memcmp(text, "ot-baggage-", 11) == 0)) {
            mask |= 1;
        }
        PyObject *bits = PyDict_GetItemWithError(masks, name);  /* borrowed */
        if (bits == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            continue;
        }
        if (!PyLong_CheckExact(bits)) {
            Py_RETURN_NONE;
        }
        long value = PyLong_AsLong(bits);
        if (value == -1 && PyErr_Occurred()) {  /* past a long: not one of propagation's masks */
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        mask |= value & 3;
    }
    return PyLong_FromLong(mask);
}

/* traceparent(context, /) -> "00-<trace id>-<span id>-<flags>", or None when the ids are not exact ints of
 * 128 and 64 bits or the flags not an int of 0 to 255 (the caller formats those as the W3C propagator does). */
static PyObject *
traceparent(PyObject *module, PyObject *context)
{
    if (span_context_check(context) < 0) {
        return NULL;
    }
    uint64_t high, low, span_id;
    int read = context_of(context, &high, &low, &span_id);
    if (read == FAILED) {
        return NULL;
    }
    PyObject *flags = PyTuple_GET_ITEM(context, 3);
    if (read == DECLINED || !PyLong_Check(flags)) {
        Py_RETURN_NONE;
    }
    long bits = PyLong_AsLong(flags);
    if (bits == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return NULL;
        }
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (bits < 0 || bits > 0xFF) {
        Py_RETURN_NONE;
    }
    PyObject *text = PyUnicode_New(55, 127);  /* 2 + 1 + 32 + 1 + 16 + 1 + 2 */
    if (text == NULL) {
        return NULL;
    }
    Py_UCS1 *at = PyUnicode_1BYTE_DATA(text);
    *at++ = '0';
    *at++ = '0';
    *at++ = '-';
    at = write_hex64(at, high);
    at = write_hex64(at, low);
    *at++ = '-';
    at = write_hex64(at, span_id);
    *at++ = '-';
    *at++ = (Py_UCS1)HEX_DIGITS[bits >> 4];
    *at = (Py_UCS1)HEX_DIGITS[bits & 0xF];
    return text;
}

/* random.getrandbits(bits) or id_generator.<generate>(): a new reference. */
static PyObject *
random_id(State *state, PyObject *tracer_dict, PyObject *tracer, PyObject *bits, int generate)
{
    PyObject *draw = PyDict_GetItemWithError(PyModule_GetDict(state->bound[B_RANDOM]), state->lnames[L_GETRANDBITS]);
    if (draw == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_AttributeError, "module 'random' has no attribute 'getrandbits'");
        }
        return NULL;
    }
    Py_INCREF(draw);
    PyObject *id = PyObject_CallOneArg(draw, bits);
    Py_DECREF(draw);
    if (id == NULL) {
        return NULL;
    }
    int truth = PyObject_IsTrue(id);
    if (truth != 0) {
        if (truth < 0) {
            Py_CLEAR(id);
        }
        return id;
    }
    Py_DECREF(id);  /* 0, an invalid id: the generator draws again, as in Python */
    PyObject *generator = attr_of(tracer_dict, tracer, state->lnames[L_ID_GENERATOR]);
    if (generator == NULL) {
        return NULL;
    }
    id = PyObject_CallMethodNoArgs(generator, state->lnames[generate]);
    Py_DECREF(generator);
    return id;
}

/* tuple.__new__(SpanContext, (trace_id, span_id, False, flags, trace_state, True)): borrowed arguments. */
static PyObject *
new_span_context(State *state, PyObject *trace_id, PyObject *span_id, PyObject *flags, PyObject *trace_state)
{
    PyTypeObject *type = (PyTypeObject *)state->bound[B_SPAN_CONTEXT];
    PyObject *context = type->tp_alloc(type, 6);  /* what tuple's __new__ does for a subclass */
    if (context == NULL) {
        return NULL;
    }
    PyObject *items[6] = {trace_id, span_id, Py_False, flags, trace_state, Py_True};
    for (int i = 0; i < 6; i++) {
        PyTuple_SET_ITEM(context, i, Py_NewRef(items[i]));
    }
    return context;
}

/* What the usual path of start_owned needs of `links` (a tuple or list): 0 links, 1 (the usual link:
 * a Link without attributes, valid, and the tracer keeps links), or -1 (Python's path, which checks
 * and copies them); -2 with an exception set. The usual link is given in *link (a new reference: the
 * tracer's attributes read here and the ids drawn after may run code that empties a list of links). */
static int
usual_links(State *state, PyObject *tracer_dict, PyObject *tracer, PyObject *links, PyObject **link)
{
    Py_ssize_t count;
    if (PyTuple_CheckExact(links)) {
        count = PyTuple_GET_SIZE(links);
    }
    else if (PyList_CheckExact(links)) {
        count = PyList_GET_SIZE(links);
    }
    else {
        return -1;
    }
    if (count == 0) {
        return 0;
    }
    if (count != 1) {
        return -1;
    }
    PyObject *found = PyTuple_CheckExact(links) ? PyTuple_GET_ITEM(links, 0) : PyList_GET_ITEM(links, 0);
    if (Py_TYPE(found) != (PyTypeObject *)state->bound[B_LINK]) {
        return -1;
    }
    Py_INCREF(found);
    int usual = -1;
    PyObject *attributes = NULL, *context = NULL, *max_links = NULL;
    if ((attributes = PyObject_GetAttr(found, state->lnames[S_ATTRIBUTES])) == NULL
        || (context = PyObject_GetAttr(found, state->lnames[S_CONTEXT])) == NULL
        || (max_links = attr_of(tracer_dict, tracer, state->lnames[L_MAX_LINKS])) == NULL) {
        PyErr_Clear();  /* Python's path meets it again */
        goto done;
    }
    if (attributes != Py_None || !PyTuple_Check(context) || PyTuple_GET_SIZE(context) != 6) {
        goto done;
    }
    int valid = PyObject_IsTrue(PyTuple_GET_ITEM(context, 5));
    int keeps = max_links == Py_None ? 1 : PyObject_RichCompareBool(max_links, state->zero, Py_NE);
    if (valid < 0 || keeps < 0) {
        PyErr_Clear();
        goto done;
    }
    usual = valid && keeps ? 1 : -1;
done:
    Py_XDECREF(attributes);
    Py_XDECREF(context);
    Py_XDECREF(max_links);
    if (usual == 1) {
        *link = found;
    }
    else {
        Py_DECREF(found);
    }
    return usual;
}

/* The parent of a span started in `context` (None: the current one): 0 none (*parent NULL), 1 a lean
 * span's context (*parent: a new reference to a 6-tuple), -1 Python's path (another span, another
 * runtime context, anything unexpected); -2 with an exception set. */
static int
parent_of(State *state, PyObject *context, PyObject **parent)
{
    *parent = NULL;
    PyObject *values;
    if (context == Py_None) {
        if (state->bound[B_VARIABLE] == Py_None) {
            return -1;  /* another runtime context than the API's own: current.get_current's */
        }
        if (PyContextVar_Get(state->bound[B_VARIABLE], NULL, &values) < 0) {
            return -2;
        }
        if (values == NULL) {
            return -1;  /* no value and no default: Python raises it */
        }
    }
    else {
        values = Py_NewRef(context);
    }
    int found = -1;
    if (Py_TYPE(values) != (PyTypeObject *)state->bound[B_CONTEXT] && !PyDict_CheckExact(values)) {
        goto done;  /* a Context is a dict whose get() is dict's: anything else, Python's path */
    }
    PyObject *current = PyDict_GetItemWithError(values, state->bound[B_SPAN_KEY]);  /* borrowed */
    if (current == NULL && PyErr_Occurred()) {
        found = -2;
        goto done;
    }
    if (current == NULL || current == Py_None) {
        found = 0;
        goto done;
    }
    if (Py_TYPE(current) != state->span_type) {
        goto done;  /* another tracer's span: its checks */
    }
    PyObject *span_context = slot_get(state, current, S_CONTEXT);
    if (span_context == NULL || !PyTuple_Check(span_context) || PyTuple_GET_SIZE(span_context) != 6) {
        goto done;
    }
    *parent = Py_NewRef(span_context);
    found = 1;
done:
    Py_DECREF(values);
    return found;
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *module;
    PyObject *tracer;
} Starter;

/* The tracer's own start_owned (Python), with the same arguments. */
static PyObject *
start_in_python(Starter *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    State *state = PyModule_GetState(self->module);
    PyObject *method = PyObject_GetAttr(self->tracer, state->lnames[L_START_OWNED]);
    if (method == NULL) {
        return NULL;
    }
    PyObject *span = PyObject_Vectorcall(method, args, PyVectorcall_NARGS(nargsf), kwnames);
    Py_DECREF(method);
    return span;
}

/* starter(tracer)(name, context, kind, attributes, links): LeanTracer.start_owned. */
static PyObject *
start_owned(Starter *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    State *state = PyModule_GetState(self->module);
    if (state == NULL || !state->lifecycle || PyVectorcall_NARGS(nargsf) != 5 || kwnames != NULL
        || !PyDict_CheckExact(args[3])) {
        return start_in_python(self, args, nargsf, kwnames);
    }
    PyObject *tracer = self->tracer, *name = args[0], *kind = args[2], *attributes = args[3], *links = args[4];
    PyObject *dict = dict_of(tracer), *room = NULL, *parent = NULL, *link = NULL, *span = NULL;
    PyObject *trace_id = NULL, *span_id = NULL, *span_context = NULL, *scope = NULL, *resource = NULL;
    PyObject *start = NULL, *generator = NULL;
    int python = 1;  /* Python's path: decided before anything is drawn or changed */
    if (dict == NULL) {
        goto done;
    }
    if ((room = attr_of(dict, tracer, state->lnames[L_OWNED_ROOM])) == NULL) {
        PyErr_Clear();
        goto done;
    }
    Py_ssize_t most = PyLong_CheckExact(room) ? PyLong_AsSsize_t(room) : -1;
    if (most == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        goto done;
    }
    if (PyDict_GET_SIZE(attributes) > most) {  /* another sampler, a start processor, a limit that cuts */
        goto done;
    }
    int found = parent_of(state, args[1], &parent);
    if (found == -2) {
        python = 0;
        goto done;
    }
    if (found < 0) {
        goto done;
    }
    PyObject *flags = state->bound[B_ROOT_FLAGS], *trace_state = state->bound[B_DEFAULT_TRACE_STATE];
    int sampled = 1;
    if (parent != NULL) {
        int valid = PyObject_IsTrue(PyTuple_GET_ITEM(parent, 5));
        if (valid < 0) {
            PyErr_Clear();
            goto done;
        }
        if (!valid) {
            Py_CLEAR(parent);  /* an invalid parent: a root, as in Python */
        }
    }
    if (parent != NULL) {
        PyObject *parent_flags = PyTuple_GET_ITEM(parent, 3);
        long bits = PyLong_Check(parent_flags) ? PyLong_AsLong(parent_flags) : -1;
        if (!PyLong_Check(parent_flags) || (bits == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            goto done;
        }
        flags = PyTuple_GET_ITEM(state->bound[B_CHILD_FLAGS], bits & 0xFF);
        long child = PyLong_AsLong(flags);
        if (child == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            goto done;
        }
        sampled = (int)(child & 1);
        trace_state = PyTuple_GET_ITEM(parent, 4);
    }
    if (sampled) {
        int count = usual_links(state, dict, tracer, links, &link);
        if (count < 0) {
            goto done;
        }
    }
    if ((generator = attr_of(dict, tracer, state->lnames[L_ID_GENERATOR])) == NULL) {
        PyErr_Clear();
        goto done;
    }
    int own_ids = Py_IS_TYPE(generator, &IdsType);  /* else the SDK's RandomIdGenerator (owned_room says) */
    python = 0;  /* from here on, this path: its errors are raised */
    if (parent != NULL) {
        trace_id = Py_NewRef(PyTuple_GET_ITEM(parent, 0));
    }
    else if ((trace_id = own_ids ? new_trace_id() : random_id(state, dict, tracer, state->bits128, L_GENERATE_TRACE_ID))
             == NULL) {
        goto done;
    }
    if ((span_id = own_ids ? new_span_id() : random_id(state, dict, tracer, state->bits64, L_GENERATE_SPAN_ID))
        == NULL) {
        goto done;
    }
    if ((span_context = new_span_context(state, trace_id, span_id, flags, trace_state)) == NULL) {
        goto done;
    }
    if (!sampled) {
        span = PyObject_CallOneArg(state->bound[B_NON_RECORDING], span_context);
        goto done;
    }
    if ((scope = attr_of(dict, tracer, state->lnames[L_SCOPE])) == NULL
        || (resource = attr_of(dict, tracer, state->lnames[L_RESOURCE])) == NULL
        || (start = now_ns()) == NULL) {
        goto done;
    }
    PyObject *no_args = PyTuple_New(0);
    if (no_args == NULL) {
        goto done;
    }
    span = PyBaseObject_Type.tp_new(state->span_type, no_args, NULL);  /* object.__new__(LeanSpan) */
    Py_DECREF(no_args);
    if (span == NULL) {
        goto done;
    }
    PyObject *span_links = link != NULL ? PyTuple_Pack(1, link) : PyTuple_New(0);
    if (span_links == NULL) {
        Py_CLEAR(span);
        goto done;
    }
    if (link != NULL && PyObject_SetAttr(link, state->lnames[S_ATTRIBUTES], state->bound[B_NO_ATTRIBUTES]) < 0) {
        Py_DECREF(span_links);
        Py_CLEAR(span);
        goto done;
    }
    /* LeanSpan._init's fields, for an owned dict (each slot of a new span is empty). */
    slot_init(state, span, S_NAME, Py_NewRef(name));
    slot_init(state, span, S_CONTEXT, Py_NewRef(span_context));
    slot_init(state, span, S_KIND, Py_NewRef(kind));
    slot_init(state, span, S_SCOPE, Py_NewRef(scope));
    slot_init(state, span, S_PARENT, Py_NewRef(parent != NULL ? parent : Py_None));
    slot_init(state, span, S_RESOURCE, Py_NewRef(resource));
    slot_init(state, span, S_START_TIME, Py_NewRef(start));
    slot_init(state, span, S_TRACER, Py_NewRef(tracer));
    slot_init(state, span, S_END_TIME, Py_NewRef(Py_None));
    slot_init(state, span, S_STATUS, Py_NewRef(state->bound[B_DEFAULT_STATUS]));
    slot_init(state, span, S_DROPPED, Py_NewRef(state->zero));
    slot_init(state, span, S_EVENTS, PyTuple_New(0));  /* the empty tuple: a shared object, no failure */
    slot_init(state, span, S_LINKS, span_links);
    slot_init(state, span, S_PLAIN, Py_NewRef(Py_True));
    slot_init(state, span, S_ATTRIBUTES, Py_NewRef(attributes));
done:
    Py_XDECREF(dict);
    Py_XDECREF(room);
    Py_XDECREF(link);
    Py_XDECREF(parent);
    Py_XDECREF(trace_id);
    Py_XDECREF(span_id);
    Py_XDECREF(span_context);
    Py_XDECREF(scope);
    Py_XDECREF(resource);
    Py_XDECREF(start);
    Py_XDECREF(generator);
    if (python) {
        return start_in_python(self, args, nargsf, kwnames);
    }
    return span;
}

static int
starter_traverse(Starter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->module);
    Py_VISIT(self->tracer);
    return 0;
}

static int
starter_clear(Starter *self)
{
    Py_CLEAR(self->module);
    Py_CLEAR(self->tracer);
    return 0;
}

static void
starter_dealloc(Starter *self)
{
    PyObject_GC_UnTrack(self);
    starter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject StarterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asgi_ws_gateway.telemetry._span_wire.Starter",
    .tp_doc = "A lean tracer's start_owned, its usual case in C.",
    .tp_basicsize = sizeof(Starter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Starter, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)starter_traverse,
    .tp_clear = (inquiry)starter_clear,
    .tp_dealloc = (destructor)starter_dealloc,
};

/* The module's state, with the lifecycle bound; NULL with an exception set otherwise. */
static State *
lifecycle_state(PyObject *module)
{
    State *state = PyModule_GetState(module);
    if (state != NULL && !state->lifecycle) {
        PyErr_SetString(PyExc_RuntimeError, "_span_wire: bind_lifecycle() was not called");
        return NULL;
    }
    return state;
}

/* starter(tracer, /) -> Starter */
static PyObject *
starter(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "starter() takes 1 positional argument (%zd given)", nargs);
        return NULL;
    }
    if (lifecycle_state(module) == NULL) {
        return NULL;
    }
    Starter *self = PyObject_GC_New(Starter, &StarterType);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)start_owned;
    self->module = Py_NewRef(module);
    self->tracer = Py_NewRef(args[0]);
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* -- the batch queue ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *module;
    PyObject *batch;
    PyObject *emit;
    PyObject *process;
    Py_ssize_t most;  /* the batch's _max_queue_size and _max_export_batch_size, set once in its __init__ */
    Py_ssize_t full;
} Queue;

static PyTypeObject QueueType;

/* _queue_into's queue(span): into the batch's queue when it has room (the worker woken at a full
 * batch), else emit(span) (shut down, a forked child not yet reset, a full queue). New reference. */
static PyObject *
queue_span(Queue *self, PyObject *span)
{
    State *state = PyModule_GetState(self->module);
    if (state == NULL) {
        return NULL;
    }
    PyObject *dict = dict_of(self->batch), *spans = NULL, *shutdown = NULL, *pid = NULL, *process = NULL;
    PyObject *awaken = NULL, *out = NULL;
    int emit = 1;
    if ((spans = attr_of(dict, self->batch, state->lnames[L_QUEUE])) == NULL
        || (shutdown = attr_of(dict, self->batch, state->lnames[L_SHUTDOWN])) == NULL) {
        goto done;
    }
    int truth = PyObject_IsTrue(shutdown);
    if (truth < 0) {
        goto done;
    }
    if (!truth) {
        if ((pid = attr_of(dict, self->batch, state->lnames[L_PID])) == NULL
            || (process = PySequence_GetItem(self->process, 0)) == NULL) {
            goto done;
        }
        int other = PyObject_RichCompareBool(pid, process, Py_NE);
        if (other < 0) {
            goto done;
        }
        if (!other) {
            Py_ssize_t length = PyObject_Size(spans);
            if (length < 0) {
                goto done;
            }
            emit = length >= self->most;
        }
    }
    if (emit) {
        out = PyObject_CallOneArg(self->emit, span);
        goto done;
    }
    PyObject *stack[2] = {spans, span};
    PyObject *added = PyObject_VectorcallMethod(state->lnames[L_APPENDLEFT], stack,
                                                2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (added == NULL) {
        goto done;
    }
    Py_DECREF(added);
    Py_ssize_t length = PyObject_Size(spans);
    if (length < 0) {
        goto done;
    }
    if (length >= self->full) {  /* a full batch: the worker exports it now */
        if ((awaken = attr_of(dict, self->batch, state->lnames[L_WORKER_AWAKEN])) == NULL) {
            goto done;
        }
        PyObject *is_set = PyObject_CallMethodNoArgs(awaken, state->lnames[L_IS_SET]);
        if (is_set == NULL) {
            goto done;
        }
        truth = PyObject_IsTrue(is_set);
        Py_DECREF(is_set);
        if (truth < 0) {
            goto done;
        }
        if (!truth) {
            PyObject *woken = PyObject_CallMethodNoArgs(awaken, state->lnames[L_WAKE]);
            if (woken == NULL) {
                goto done;
            }
            Py_DECREF(woken);
        }
    }
    out = Py_NewRef(Py_None);
done:
    Py_XDECREF(dict);
    Py_XDECREF(spans);
    Py_XDECREF(shutdown);
    Py_XDECREF(pid);
    Py_XDECREF(process);
    Py_XDECREF(awaken);
    if (out != NULL && emit) {
        Py_SETREF(out, Py_NewRef(Py_None));  /* queue() returns None, whatever emit returned */
    }
    return out;
}

static PyObject *
queue_call(Queue *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "queue() takes 1 positional argument");
        return NULL;
    }
    return queue_span(self, args[0]);
}

static int
queue_traverse(Queue *self, visitproc visit, void *arg)
{
    Py_VISIT(self->module);
    Py_VISIT(self->batch);
    Py_VISIT(self->emit);
    Py_VISIT(self->process);
    return 0;
}

static int
queue_clear(Queue *self)
{
    Py_CLEAR(self->module);
    Py_CLEAR(self->batch);
    Py_CLEAR(self->emit);
    Py_CLEAR(self->process);
    return 0;
}

static void
queue_dealloc(Queue *self)
{
    PyObject_GC_UnTrack(self);
    queue_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject QueueType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asgi_ws_gateway.telemetry._span_wire.Queue",
    .tp_doc = "A batch span processor's queue: lean_provider._queue_into's queue, in C.",
    .tp_basicsize = sizeof(Queue),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Queue, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)queue_traverse,
    .tp_clear = (inquiry)queue_clear,
    .tp_dealloc = (destructor)queue_dealloc,
};

/* An exact int attribute read once, as a Py_ssize_t; -1 with an exception set. */
static Py_ssize_t
size_attr(PyObject *object, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(object, name);
    if (value == NULL) {
        return -1;
    }
    Py_ssize_t size = -1;
    if (!PyLong_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "queue_into() needs int queue sizes");
    }
    else {
        size = PyLong_AsSsize_t(value);
    }
    Py_DECREF(value);
    return size;
}

/* queue_into(batch, emit, process, /) -> Queue */
static PyObject *
queue_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "queue_into() takes 3 positional arguments (%zd given)", nargs);
        return NULL;
    }
    State *state = lifecycle_state(module);
    if (state == NULL) {
        return NULL;
    }
    Py_ssize_t most = size_attr(args[0], state->lnames[L_MAX_QUEUE_SIZE]);
    if (most == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t full = size_attr(args[0], state->lnames[L_MAX_EXPORT_BATCH_SIZE]);
    if (full == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Queue *self = PyObject_GC_New(Queue, &QueueType);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)queue_call;
    self->module = Py_NewRef(module);
    self->batch = Py_NewRef(args[0]);
    self->emit = Py_NewRef(args[1]);
    self->process = Py_NewRef(args[2]);
    self->most = most;
    self->full = full;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* -- end_own ------------------------------------------------------------------------------------ */

/* Python's end_own(span, attributes): the reference, for every case this one leaves. */
static PyObject *
end_in_python(State *state, PyObject *const *args)
{
    return PyObject_Vectorcall(state->bound[B_END_OWN], args, 2, NULL);
}

/* Calls each of `ends` (an iterable) with the span. */
static int
call_each(PyObject *ends, PyObject *span)
{
    PyObject *iterator = PyObject_GetIter(ends);
    if (iterator == NULL) {
        return -1;
    }
    PyObject *on_end;
    while ((on_end = PyIter_Next(iterator)) != NULL) {
        PyObject *result = PyObject_CallOneArg(on_end, span);
        Py_DECREF(on_end);
        if (result == NULL) {
            Py_DECREF(iterator);
            return -1;
        }
        Py_DECREF(result);
    }
    Py_DECREF(iterator);
    return PyErr_Occurred() ? -1 : 0;
}

/* Moves each of `attributes`' keys to the end of `current`, in order (a key was rewritten). */
static int
move_to_end(PyObject *current, PyObject *attributes)
{
    PyObject *keys = PyDict_Keys(attributes);  /* a copy: nothing below can change what is iterated */
    if (keys == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        PyObject *value = PyDict_GetItemWithError(current, key);
        if (value == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetObject(PyExc_KeyError, key);
            }
            Py_DECREF(keys);
            return -1;
        }
        Py_INCREF(value);
        int failed = PyDict_DelItem(current, key) < 0 || PyDict_SetItem(current, key, value) < 0;
        Py_DECREF(value);
        if (failed) {
            Py_DECREF(keys);
            return -1;
        }
    }
    Py_DECREF(keys);
    return 0;
}

/* end_own(span, attributes, /) -> None */
static PyObject *
end_own(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "end_own() takes 2 positional arguments (%zd given)", nargs);
        return NULL;
    }
    State *state = lifecycle_state(module);
    if (state == NULL) {
        return NULL;
    }
    PyObject *span = args[0], *attributes = args[1];
    if (Py_TYPE(span) != state->span_type || !PyDict_CheckExact(attributes)) {
        return end_in_python(state, args);
    }
    PyObject *current = slot_get(state, span, S_ATTRIBUTES), *tracer = slot_get(state, span, S_TRACER);
    PyObject *ended = slot_get(state, span, S_END_TIME), *context = slot_get(state, span, S_CONTEXT);
    if (current == NULL || tracer == NULL || ended != Py_None || !PyDict_CheckExact(current)
        || context == NULL || !PyTuple_Check(context) || PyTuple_GET_SIZE(context) < 4
        || !PyLong_Check(PyTuple_GET_ITEM(context, 3))) {
        return end_in_python(state, args);  /* ended, or not as start_owned makes spans: Python's checks */
    }
    long flags = PyLong_AsLong(PyTuple_GET_ITEM(context, 3));
    if (flags == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return end_in_python(state, args);
    }
    int sampled = (int)(flags & 1);
    PyObject *dict = dict_of(tracer), *room = NULL, *end = NULL, *now = NULL, *out = NULL;
    Py_INCREF(span);  /* what it reads stays alive whatever an on_end does */
    Py_INCREF(current);
    Py_INCREF(tracer);
    int python = 1;
    if ((room = attr_of(dict, tracer, state->lnames[L_OWNED_ROOM])) == NULL) {
        PyErr_Clear();
        goto done;
    }
    Py_ssize_t most = PyLong_CheckExact(room) ? PyLong_AsSsize_t(room) : -1;
    if (most == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        goto done;
    }
    Py_ssize_t size = PyDict_GET_SIZE(current), adding = PyDict_GET_SIZE(attributes);
    if (size + adding > most) {  /* the SDK's rules (a limit, a processor added since): set_plain and end */
        goto done;
    }
    python = 0;
    if (adding > 0) {
        if (PyDict_Update(current, attributes) < 0) {
            goto done;
        }
        if (PyDict_GET_SIZE(current) != size + adding && move_to_end(current, attributes) < 0) {
            goto done;  /* a key rewritten (rare): each moves to the end, in order, as in the SDK */
        }
    }
    if ((now = now_ns()) == NULL) {
        goto done;
    }
    PyObject **slot = (PyObject **)((char *)span + state->slots[S_END_TIME]);
    Py_XSETREF(*slot, Py_NewRef(now));
    if (sampled) {
        if ((end = attr_of(dict, tracer, state->lnames[L_SAMPLED_END])) == NULL) {
            goto done;
        }
        if (end != Py_None) {  /* the usual single batch processor: no loop */
            out = Py_IS_TYPE(end, &QueueType) ? queue_span((Queue *)end, span) : PyObject_CallOneArg(end, span);
            if (out != NULL) {
                Py_SETREF(out, Py_NewRef(Py_None));
            }
            goto done;
        }
        Py_CLEAR(end);
    }
    if ((end = attr_of(dict, tracer, state->lnames[sampled ? L_SAMPLED_ENDS : L_ENDS])) == NULL
        || call_each(end, span) < 0) {
        goto done;
    }
    out = Py_NewRef(Py_None);
done:
    Py_XDECREF(dict);
    Py_XDECREF(room);
    Py_XDECREF(end);
    Py_XDECREF(now);
    Py_DECREF(current);
    Py_DECREF(tracer);
    if (python) {
        out = end_in_python(state, args);
    }
    Py_DECREF(span);
    return out;
}

/* bind_lifecycle(span_context, non_recording_span, link, no_attributes, default_status,
 *                default_trace_state, root_flags, child_flags, context, variable, span_key, random, end_own, /)
 * context: OpenTelemetry's Context class (a dict whose get() is dict's). */
static PyObject *
bind_lifecycle(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != BOUND_COUNT) {
        PyErr_Format(PyExc_TypeError, "bind_lifecycle() takes %d positional arguments (%zd given)", BOUND_COUNT,
                     nargs);
        return NULL;
    }
    State *state = PyModule_GetState(module);
    if (state == NULL) {
        return NULL;
    }
    if (!PyType_Check(args[B_SPAN_CONTEXT]) || !PyType_IsSubtype((PyTypeObject *)args[B_SPAN_CONTEXT], &PyTuple_Type)
        || !PyType_Check(args[B_LINK]) || !PyTuple_CheckExact(args[B_CHILD_FLAGS])
        || PyTuple_GET_SIZE(args[B_CHILD_FLAGS]) != 256 || !PyModule_Check(args[B_RANDOM])
        || (args[B_VARIABLE] != Py_None && !PyContextVar_CheckExact(args[B_VARIABLE]))) {
        PyErr_SetString(PyExc_TypeError, "bind_lifecycle(): unexpected arguments");
        return NULL;
    }
    state->lifecycle = 0;
    if (state->span_type == NULL) {
        Py_RETURN_FALSE;  /* bind() found not the encoder's slots */
    }
    Py_ssize_t slots[SLOT_COUNT];
    for (int i = 0; i < SLOT_COUNT; i++) {
        slots[i] = slot_offset(state->span_type, state->lnames[i]);
        if (slots[i] < 0) {
            return NULL;
        }
        if (slots[i] == 0) {
            Py_RETURN_FALSE;
        }
    }
    memcpy(state->slots, slots, sizeof(slots));
    for (int i = 0; i < BOUND_COUNT; i++) {
        Py_XSETREF(state->bound[i], Py_NewRef(args[i]));
    }
    state->lifecycle = 1;
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(span_type, kinds, /)\n--\n\n"
     "Read the fields of spans of exactly span_type from their __slots__ (True; False: it has not\n"
     "those slots, and they are read by attribute), and know the SpanKind members (a tuple by value)\n"
     "by identity."},
    {"encode_span", (PyCFunction)(void (*)(void))encode_span, METH_FASTCALL,
     "encode_span(span, default_status, default_trace_state, no_attributes, /)\n--\n\n"
     "A LeanSpan as one ScopeSpans.spans field (the bytes SpanEncoder._lean_span gives), or None\n"
     "for a span it leaves to the Python encoder."},
    {"encode_spans", (PyCFunction)(void (*)(void))encode_spans, METH_FASTCALL,
     "encode_spans(spans, default_status, default_trace_state, no_attributes, /)\n--\n\n"
     "A batch of bound spans of one resource and one scope (a list or tuple) as (resource, scope, parts):\n"
     "parts its ScopeSpans.spans fields in order, runs of them as bytes and each span it leaves to\n"
     "Python as the span. None: not such a batch (empty, another type, resources or scopes)."},
    {"bind_lifecycle", (PyCFunction)(void (*)(void))bind_lifecycle, METH_FASTCALL,
     "bind_lifecycle(span_context, non_recording_span, link, no_attributes, default_status,\n"
     "               default_trace_state, root_flags, child_flags, context, variable, span_key, random,\n"
     "               end_own, /)\n--\n\n"
     "After bind(): what starter(), end_own() and queue_into() make spans of (True; False: the bound\n"
     "type has not LeanSpan's slots). variable: the runtime context's ContextVar, or None."},
    {"starter", (PyCFunction)(void (*)(void))starter, METH_FASTCALL,
     "starter(tracer, /)\n--\n\n"
     "tracer.start_owned, its usual case in C (a callable of the same arguments)."},
    {"end_own", (PyCFunction)(void (*)(void))end_own, METH_FASTCALL,
     "end_own(span, attributes, /)\n--\n\n"
     "lean_spans.end_own, its usual case in C."},
    {"hex_ids", (PyCFunction)hex_ids, METH_O,
     "hex_ids(context, /)\n--\n\n"
     "A SpanContext's trace and span ids as hex text: (trace_id.to_bytes(16, 'big').hex(),\n"
     "span_id.to_bytes(8, 'big').hex()), raising as those do."},
    {"traceparent", (PyCFunction)traceparent, METH_O,
     "traceparent(context, /)\n--\n\n"
     "The W3C traceparent header of a SpanContext ('00-' trace id '-' span id '-' flags, in hex), or\n"
     "None when its ids are not ints of 128 and 64 bits or its flags not of 0 to 255."},
    {"trace_names", (PyCFunction)(void (*)(void))trace_names, METH_FASTCALL,
     "trace_names(headers, masks, /)\n--\n\n"
     "propagation._filtered's answer for the names of a list of (name, value) tuples, as a bit mask\n"
     "(1: an untrusted client's, 2: a trusted one's request loses headers to a new traceparent): the OR\n"
     "of masks[name] (a dict) and 1 for a name starting uberctx- or ot-baggage-; None for names it\n"
     "leaves to Python (not exact ASCII str without upper case or control characters)."},
    {"queue_into", (PyCFunction)(void (*)(void))queue_into, METH_FASTCALL,
     "queue_into(batch, emit, process, /)\n--\n\n"
     "lean_provider._queue_into(batch, emit) (process: its _PROCESS list), in C."},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    State *state = PyModule_GetState(module);
    if (state == NULL) {
        return -1;
    }
    for (int i = 0; i < NAME_COUNT; i++) {
        if ((state->names[i] = PyUnicode_InternFromString(NAMES[i])) == NULL) {
            return -1;  /* the names made so far are released by clear_module */
        }
    }
    for (int i = 0; i < LNAME_COUNT; i++) {
        if ((state->lnames[i] = PyUnicode_InternFromString(LNAMES[i])) == NULL) {
            return -1;
        }
    }
    if ((state->bits64 = PyLong_FromLong(64)) == NULL || (state->bits128 = PyLong_FromLong(128)) == NULL
        || (state->zero = PyLong_FromLong(0)) == NULL) {
        return -1;
    }
    if (PyType_Ready(&StarterType) < 0 || PyType_Ready(&QueueType) < 0 || PyType_Ready(&IdsType) < 0
        || PyModule_AddObjectRef(module, "Ids", (PyObject *)&IdsType) < 0) {
        return -1;
    }
#ifndef _WIN32
    if (!ids_fork_handler) {
        if (pthread_atfork(NULL, NULL, ids_after_fork_in_child) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "_span_wire: pthread_atfork failed");
            return -1;
        }
        ids_fork_handler = 1;
    }
#endif
    return PyModule_AddIntConstant(module, "FORMAT", SPAN_WIRE_FORMAT);
}

static int
traverse_module(PyObject *module, visitproc visit, void *arg)
{
    State *state = PyModule_GetState(module);
    if (state != NULL) {
        for (int i = 0; i < NAME_COUNT; i++) {
            Py_VISIT(state->names[i]);
        }
        Py_VISIT(state->span_type);
        for (int i = 0; i < KIND_COUNT; i++) {
            Py_VISIT(state->kinds[i]);
        }
        for (int i = 0; i < LNAME_COUNT; i++) {
            Py_VISIT(state->lnames[i]);
        }
        for (int i = 0; i < BOUND_COUNT; i++) {
            Py_VISIT(state->bound[i]);
        }
    }
    return 0;
}

static int
clear_module(PyObject *module)
{
    State *state = PyModule_GetState(module);
    if (state != NULL) {
        for (int i = 0; i < NAME_COUNT; i++) {
            Py_CLEAR(state->names[i]);
        }
        Py_CLEAR(state->span_type);
        for (int i = 0; i < KIND_COUNT; i++) {
            Py_CLEAR(state->kinds[i]);
        }
        state->lifecycle = 0;
        for (int i = 0; i < LNAME_COUNT; i++) {
            Py_CLEAR(state->lnames[i]);
        }
        for (int i = 0; i < BOUND_COUNT; i++) {
            Py_CLEAR(state->bound[i]);
        }
        Py_CLEAR(state->bits64);
        Py_CLEAR(state->bits128);
        Py_CLEAR(state->zero);
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
    .m_name = "asgi_ws_gateway.telemetry._span_wire",
    .m_doc = "The gateway's own spans as OTLP protobuf bytes (an optional accelerator of otlp_wire).",
    .m_size = sizeof(State),
    .m_methods = methods,
    .m_slots = slots,
    .m_traverse = traverse_module,
    .m_clear = clear_module,
    .m_free = free_module,
};

PyMODINIT_FUNC
PyInit__span_wire(void)
{
    return PyModuleDef_Init(&module_def);
}
