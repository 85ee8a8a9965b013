/* The C reader of OTLP/protobuf trace exports (ExportTraceServiceRequest) for the collector: an
   accelerator behind pilothouse._speedups, whose reference is the upb path of pilothouse.tracing.otlp
   (parse_protobuf, then iter_protobuf).

   count(body) checks a whole export and returns its number of spans; decode(body, RawSpan, RawEvent)
   returns the spans as RawSpan objects, exactly as iter_protobuf reads them through upb. Both raise
   ValueError on anything they do not take: malformed wire data, invalid UTF-8 in a string field, ids
   of the wrong length, a singular message field given twice (protobuf merges those), groups, nesting
   deeper than MAX_DEPTH. The caller then hands the body to upb, which decides and words the error:
   this reader only needs to be right about what it accepts.

   Why it exists: upb makes a message object for every span, attribute and value, which Python code
   then copies into RawSpans; this reader makes the RawSpans straight from the bytes, in one pass.
   Measure it against upb with `python benchmarks/speedups.py`, end to end with
   `python benchmarks/ingest.py`.

   Schema: opentelemetry-proto 1.x (collector/trace/v1, trace/v1, common/v1, resource/v1). Fields it
   does not know are skipped, as upb skips unknown fields. Built by hatch_build.py at install. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* PyMemberDef's T_OBJECT_EX and READONLY */
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 32

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Buf;

/* 2200-01-01 in ns since 1970: a span time past it cannot be stored (tracing.otlp.MAX_TIME_NS) */
#define MAX_TIME_NS 7258118400000000000ULL

typedef struct {
    int build;           /* 0: check only (check), 1: make objects (decode) */
    const char *error;   /* why the body is not taken */
    Py_ssize_t count;    /* spans accepted */
    Py_ssize_t rejected; /* spans whose times cannot be stored */
    Py_ssize_t values;   /* attribute values of spans, events and resources (nested ones too) */
    char reason[160];    /* the first rejected span's reason (tracing.otlp.time_problem's words) */
    int event_bad;       /* an event of the span being read has a time past MAX_TIME_NS */
    uint64_t event_time; /* the first such time */
    Py_ssize_t work;            /* decode: attributes read since the GIL was last offered */
    Py_ssize_t max_attrs;       /* decode: attributes kept per span, event, resource */
    Py_ssize_t max_value_bytes; /* decode: a string or bytes value is cut past this */
    Py_ssize_t max_key_bytes;   /* decode: an attribute with a longer key is left out (< 0: none) */
    PyObject *spans;     /* list (decode) */
    PyObject *raw_span;  /* RawSpan class */
    PyObject *raw_event; /* RawEvent class */
    PyObject *b64;       /* base64.b64encode */
} Ctx;

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

typedef struct {
    uint32_t number;
    int wt;
    uint64_t value; /* varint, fixed64 or fixed32 */
    Buf sub;        /* length-delimited */
} Field;

static PyObject *b64_function = NULL;
static PyObject *span_fields[12];  /* RawSpan's field names, interned */
static PyObject *event_fields[3];  /* RawEvent's */

/* Where a slots class keeps each field: the offsets of its plain, writable object slots, found once
   per class (0 where a field is anything else, say a property a subclass added, or a slot of another
   class: then it is set through setattr, which checks). */
typedef struct {
    PyObject *cls; /* the class the offsets are for (a strong reference) */
    Py_ssize_t offsets[12];
} Layout;
static Layout span_layout, event_layout;

/* Copies the offsets for cls into `offsets` (n <= 12), finding them first if the cache is for another
   class; the cache changes only once every lookup has succeeded. */
static int find_layout(Layout *layout, PyObject *cls, PyObject **names, int n, Py_ssize_t *offsets) {
    if (layout->cls != cls) {
        Py_ssize_t found[12] = {0};
        for (int i = 0; i < n; i++) {
            PyObject *d = PyObject_GetAttr(cls, names[i]);
            if (d == NULL) return -1;
            if (Py_IS_TYPE(d, &PyMemberDescr_Type) &&
                PyType_IsSubtype((PyTypeObject *)cls, PyDescr_TYPE(d))) {
                PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
                if (m->type == T_OBJECT_EX && !(m->flags & READONLY)) found[i] = m->offset;
            }
            Py_DECREF(d);
        }
        memcpy(layout->offsets, found, sizeof found);
        Py_XSETREF(layout->cls, Py_NewRef(cls));
    }
    memcpy(offsets, layout->offsets, n * sizeof(Py_ssize_t));
    return 0;
}

/* An instance of a slots dataclass made without running its __init__ (which only assigns the
   fields, in order): allocated, then each field stored in its slot. Steals values. */
static PyObject *new_record(PyObject *cls, Layout *layout, PyObject **names, PyObject **values, int n) {
    PyObject *obj = NULL;
    Py_ssize_t offsets[12]; /* a copy: allocating may run other Python code, which may decode */
    for (int i = 0; i < n; i++)
        if (values[i] == NULL) goto done;
    if (find_layout(layout, cls, names, n, offsets) < 0) goto done;
    PyTypeObject *type = (PyTypeObject *)cls;
    obj = type->tp_alloc(type, 0); /* slots start NULL */
    if (obj == NULL) goto done;
    for (int i = 0; i < n; i++) {
        if (offsets[i] > 0) {
            *(PyObject **)((char *)obj + offsets[i]) = values[i];
            values[i] = NULL; /* stolen by the slot */
        } else if (PyObject_SetAttr(obj, names[i], values[i]) < 0) {
            Py_CLEAR(obj);
            goto done;
        }
    }
done:
    for (int i = 0; i < n; i++) Py_XDECREF(values[i]);
    return obj;
}

static int fail(Ctx *c, const char *why) {
    if (c->error == NULL) c->error = why;
    return -1;
}

static int read_varint(Buf *b, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (b->p >= b->end) return -1;
        uint8_t byte = *b->p++;
        if (i == 9 && byte > 1) return -1;
        v |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* 1: a field was read, 0: end of the message, -1: malformed. */
static int next_field(Ctx *c, Buf *b, Field *f) {
    if (b->p >= b->end) return 0;
    uint64_t tag;
    if (read_varint(b, &tag) < 0 || (tag >> 3) == 0 || (tag >> 3) > 536870911u)
        return fail(c, "malformed field tag");
    f->number = (uint32_t)(tag >> 3);
    f->wt = (int)(tag & 7);
    switch (f->wt) {
    case WT_VARINT:
        if (read_varint(b, &f->value) < 0) return fail(c, "malformed varint");
        return 1;
    case WT_I64:
        if (b->end - b->p < 8) return fail(c, "truncated fixed64");
        memcpy(&f->value, b->p, 8); /* little-endian hosts only: see the check in module init */
        b->p += 8;
        return 1;
    case WT_I32: {
        uint32_t v;
        if (b->end - b->p < 4) return fail(c, "truncated fixed32");
        memcpy(&v, b->p, 4);
        f->value = v;
        b->p += 4;
        return 1;
    }
    case WT_LEN: {
        uint64_t n;
        if (read_varint(b, &n) < 0 || n > (uint64_t)(b->end - b->p)) return fail(c, "bad length");
        f->sub.p = b->p;
        f->sub.end = b->p + n;
        b->p += n;
        return 1;
    }
    default:
        return fail(c, "group or reserved wire type");
    }
}

/* RFC 3629 UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF), as upb checks strings. */
static int valid_utf8(const uint8_t *s, const uint8_t *end) {
    while (s < end) {
        uint64_t word;
        if (end - s >= 8 && (memcpy(&word, s, 8), (word & 0x8080808080808080ULL) == 0)) {
            s += 8; /* eight ASCII bytes */
            continue;
        }
        uint8_t a = *s;
        if (a < 0x80) {
            s++;
            continue;
        }
        Py_ssize_t left = end - s;
        if (a >= 0xC2 && a <= 0xDF) {
            if (left < 2 || (s[1] & 0xC0) != 0x80) return 0;
            s += 2;
        } else if (a >= 0xE0 && a <= 0xEF) {
            if (left < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
            if (a == 0xE0 && s[1] < 0xA0) return 0;  /* overlong */
            if (a == 0xED && s[1] > 0x9F) return 0;  /* surrogate */
            s += 3;
        } else if (a >= 0xF0 && a <= 0xF4) {
            if (left < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
                return 0;
            if (a == 0xF0 && s[1] < 0x90) return 0;  /* overlong */
            if (a == 0xF4 && s[1] > 0x8F) return 0;  /* above U+10FFFF */
            s += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

static int check_string(Ctx *c, const Field *f) {
    /* decode() runs on bodies count() took, and CPython's strict decoder applies the same rules */
    if (!c->build && !valid_utf8(f->sub.p, f->sub.end)) return fail(c, "invalid UTF-8 in a string field");
    return 0;
}

/* Short ASCII strings (attribute names, roles, model and provider names, ids of users and sessions)
   recur on every span of an export: they are made once and shared, from a small direct-mapped cache
   (only touched with the GIL held). The same keys then also meet as the same objects in the
   normaliser's dict lookups. */
#define SHORT_MAX 48
#define SHORT_SLOTS 1024
static PyObject *short_strings[SHORT_SLOTS];

static PyObject *short_ascii(const uint8_t *p, Py_ssize_t n) {
    uint32_t h = 2166136261u, high = 0; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) {
        high |= p[i];
        h = (h ^ p[i]) * 16777619u;
    }
    if (high & 0x80) return PyUnicode_DecodeUTF8((const char *)p, n, "strict");
    PyObject **slot = &short_strings[(h ^ (uint32_t)n) & (SHORT_SLOTS - 1)];
    PyObject *held = *slot;
    if (held != NULL && PyUnicode_GET_LENGTH(held) == n && memcmp(PyUnicode_1BYTE_DATA(held), p, n) == 0)
        return Py_NewRef(held);
    PyObject *s = PyUnicode_New(n, 127);
    if (s == NULL) return NULL;
    memcpy(PyUnicode_1BYTE_DATA(s), p, n);
    Py_XSETREF(*slot, Py_NewRef(s));
    return s;
}

static PyObject *make_string(const Field *f) {
    Py_ssize_t n = f->sub.end - f->sub.p;
    if (n <= SHORT_MAX) return short_ascii(f->sub.p, n);
    return PyUnicode_DecodeUTF8((const char *)f->sub.p, n, "strict");
}

/* A string field: checked, and when out is given, *out replaced by its text (last one wins). */
static int string_field(Ctx *c, const Field *f, PyObject **out) {
    if (f->wt != WT_LEN) return 0; /* a known number with another wire type: unknown, skipped */
    if (check_string(c, f) < 0) return -1;
    if (out != NULL) {
        PyObject *s = make_string(f);
        if (s == NULL) return -1;
        Py_XSETREF(*out, s);
    }
    return 0;
}

/* What decoding one attribute container (a span's, an event's, a resource's) left out or cut. */
typedef struct {
    Py_ssize_t dropped;
    Py_ssize_t cut;
} Marks;

static int key_values(Ctx *c, Buf b, uint32_t number, PyObject *dict, int depth, Marks *marks);
static int any_value(Ctx *c, Buf b, PyObject **out, int depth, Marks *marks);

/* A string or bytes value's length within the limit: cut on a UTF-8 character boundary (text). */
static Py_ssize_t value_length(Ctx *c, const Field *f, int text, Marks *marks) {
    Py_ssize_t n = f->sub.end - f->sub.p;
    if (c->max_value_bytes < 0 || n <= c->max_value_bytes) return n;
    Py_ssize_t cut = c->max_value_bytes;
    if (text)
        while (cut > 0 && (f->sub.p[cut] & 0xC0) == 0x80) cut--;
    if (marks != NULL) marks->cut++;
    return cut;
}

/* The markers tracing.otlp.mark adds: values cut short, attributes left out. */
static int mark(PyObject *dict, const Marks *marks) {
    static PyObject *cut_key = NULL, *dropped_key = NULL;
    if (cut_key == NULL && (cut_key = PyUnicode_InternFromString("pilothouse.truncated_values")) == NULL)
        return -1;
    if (dropped_key == NULL &&
        (dropped_key = PyUnicode_InternFromString("pilothouse.dropped_attributes")) == NULL)
        return -1;
    const Py_ssize_t counts[2] = {marks->cut, marks->dropped};
    PyObject *keys[2] = {cut_key, dropped_key};
    for (int i = 0; i < 2; i++) {
        if (!counts[i]) continue;
        PyObject *n = PyLong_FromSsize_t(counts[i]);
        if (n == NULL) return -1;
        int set = PyDict_SetItem(dict, keys[i], n);
        Py_DECREF(n);
        if (set < 0) return -1;
    }
    return 0;
}

/* Functions that take an out pointer or a container make objects only when it is given (NULL:
   check only). */
static int array_value(Ctx *c, Buf b, PyObject **out, int depth, Marks *marks) {
    int build = out != NULL;
    PyObject *list = NULL;
    if (build && (list = PyList_New(0)) == NULL) return -1;
    Field f;
    int r;
    while ((r = next_field(c, &b, &f)) > 0) {
        if (f.number == 1 && f.wt == WT_LEN) {
            PyObject *item = NULL;
            if (any_value(c, f.sub, build ? &item : NULL, depth + 1, marks) < 0) goto error;
            if (build) {
                int appended = PyList_Append(list, item);
                Py_DECREF(item);
                if (appended < 0) goto error;
            }
        }
    }
    if (r < 0) goto error;
    if (build) *out = list;
    return 0;
error:
    Py_XDECREF(list);
    return -1;
}

static int any_value(Ctx *c, Buf b, PyObject **out, int depth, Marks *marks) {
    if (depth > MAX_DEPTH) return fail(c, "values nested too deep");
    int build = out != NULL;
    PyObject *value = NULL; /* NULL: nothing set (None) */
    int seen_array = 0, seen_kvlist = 0, members = 0;
    c->values++;
    Field f;
    int r;
    while ((r = next_field(c, &b, &f)) > 0) {
        PyObject *v = NULL;
        /* A oneof given more than once (protobuf keeps the last): upb decides, and counts the values */
        if (f.number >= 1 && f.number <= 8 && members++) {
            fail(c, "more than one member of AnyValue's oneof");
            goto error;
        }
        switch (f.number) {
        case 1: /* string_value */
            if (f.wt != WT_LEN) continue;
            if (check_string(c, &f) < 0) goto error;
            if (build) {
                Py_ssize_t n = value_length(c, &f, 1, marks);
                if (n == f.sub.end - f.sub.p) {
                    v = make_string(&f);
                } else {
                    v = PyUnicode_DecodeUTF8((const char *)f.sub.p, n, "strict");
                }
                if (v == NULL) goto error;
            }
            break;
        case 2: /* bool_value */
            if (f.wt != WT_VARINT) continue;
            if (build) v = PyBool_FromLong(f.value != 0);
            break;
        case 3: /* int_value */
            if (f.wt != WT_VARINT) continue;
            if (build && (v = PyLong_FromLongLong((long long)f.value)) == NULL) goto error;
            break;
        case 4: { /* double_value */
            if (f.wt != WT_I64) continue;
            double d;
            memcpy(&d, &f.value, 8);
            if (build && (v = PyFloat_FromDouble(d)) == NULL) goto error;
            break;
        }
        case 5: /* array_value: given twice, protobuf would merge the two */
            if (f.wt != WT_LEN) continue;
            if (seen_array++) {
                fail(c, "array_value given twice");
                goto error;
            }
            if (array_value(c, f.sub, build ? &v : NULL, depth, marks) < 0) goto error;
            break;
        case 6: /* kvlist_value */
            if (f.wt != WT_LEN) continue;
            if (seen_kvlist++) {
                fail(c, "kvlist_value given twice");
                goto error;
            }
            if (build && (v = PyDict_New()) == NULL) goto error;
            if (key_values(c, f.sub, 1, v, depth + 1, marks) < 0) {
                Py_XDECREF(v);
                goto error;
            }
            break;
        case 7: /* bytes_value: base64 text, as pilothouse.tracing.otlp.any_value gives it */
            if (f.wt != WT_LEN) continue;
            if (build) {
                PyObject *raw = PyBytes_FromStringAndSize((const char *)f.sub.p, value_length(c, &f, 0, marks));
                if (raw == NULL) goto error;
                PyObject *encoded = PyObject_CallOneArg(c->b64, raw);
                Py_DECREF(raw);
                if (encoded == NULL) goto error;
                v = PyUnicode_FromEncodedObject(encoded, "ascii", "strict");
                Py_DECREF(encoded);
                if (v == NULL) goto error;
            }
            break;
        case 8: /* string_value_strindex: a member of the oneof that yields no value here */
            if (f.wt != WT_VARINT) continue;
            Py_CLEAR(value);
            continue;
        default:
            continue;
        }
        if (build) Py_XSETREF(value, v);
    }
    if (r < 0) goto error;
    if (build) {
        if (value == NULL) value = Py_NewRef(Py_None);
        *out = value;
    }
    return 0;
error:
    Py_XDECREF(value);
    return -1;
}

/* Decoding holds the GIL (it makes objects); a large export would keep every other thread, the
   server's event loop included, waiting until it ends. Every YIELD_EVERY attributes the GIL is let
   go and taken back, which lets a waiting thread run first. Nothing this reader holds can change
   meanwhile: the body is immutable and every object it made is its own. */
#define YIELD_EVERY 4096
#define RELEASE_GIL_BYTES 65536 /* check() lets the GIL go for bodies this large (collector.INLINE_BYTES) */

static void offer_gil(Ctx *c) {
    if (++c->work < YIELD_EVERY) return;
    c->work = 0;
    Py_BEGIN_ALLOW_THREADS
    Py_END_ALLOW_THREADS
}

/* One KeyValue into dict (checked only when dict is NULL). A new key past `cap` entries (cap < 0: no
   limit) is left out and counted in marks. */
static int key_value(Ctx *c, Buf b, PyObject *dict, int depth, Py_ssize_t cap, Marks *marks) {
    Field key_field = {0}, f;
    int has_key = 0, seen_value = 0;
    Buf value_buf = {NULL, NULL};
    int r;
    while ((r = next_field(c, &b, &f)) > 0) {
        if (f.number == 1) {
            if (f.wt != WT_LEN) continue; /* another wire type: unknown, skipped */
            if (check_string(c, &f) < 0) return -1;
            key_field = f; /* the last one wins */
            has_key = 1;
        } else if (f.number == 2 && f.wt == WT_LEN) {
            if (seen_value++) return fail(c, "KeyValue.value given twice");
            value_buf = f.sub;
        }
    }
    if (r < 0) return -1;
    if (dict == NULL) return seen_value ? any_value(c, value_buf, NULL, depth, NULL) : 0;
    offer_gil(c);
    if (c->max_key_bytes >= 0 && has_key && key_field.sub.end - key_field.sub.p > c->max_key_bytes) {
        if (marks != NULL) marks->dropped++; /* a key past the limit: left out, never kept cut */
        return 0;
    }
    PyObject *key = has_key ? make_string(&key_field) : PyUnicode_FromStringAndSize("", 0);
    if (key == NULL) return -1;
    if (cap >= 0 && PyDict_GET_SIZE(dict) >= cap) {
        int present = PyDict_Contains(dict, key);
        if (present <= 0) {
            Py_DECREF(key);
            if (present < 0) return -1;
            if (marks != NULL) marks->dropped++;
            return 0;
        }
    }
    PyObject *value = NULL;
    if (seen_value) {
        if (any_value(c, value_buf, &value, depth, marks) < 0) {
            Py_DECREF(key);
            return -1;
        }
    } else {
        value = Py_NewRef(Py_None);
    }
    int set = PyDict_SetItem(dict, key, value);
    Py_DECREF(key);
    Py_DECREF(value);
    return set;
}

/* Every field `number` of message b is a KeyValue: into dict (NULL: check only), nested (no cap). */
static int key_values(Ctx *c, Buf b, uint32_t number, PyObject *dict, int depth, Marks *marks) {
    Field f;
    int r;
    while ((r = next_field(c, &b, &f)) > 0)
        if (f.number == number && f.wt == WT_LEN && key_value(c, f.sub, dict, depth, -1, marks) < 0)
            return -1;
    return r;
}

/* A span that ends before it starts is kept with its end moved to its start, and marked with its
   original end (tracing.otlp.CLAMPED_END_KEY). */
static int mark_clamped(PyObject *dict, uint64_t end) {
    static PyObject *clamped_key = NULL;
    if (clamped_key == NULL && (clamped_key = PyUnicode_InternFromString("pilothouse.clamped_end_ns")) == NULL)
        return -1;
    PyObject *n = PyLong_FromUnsignedLongLong(end);
    if (n == NULL) return -1;
    int set = PyDict_SetItem(dict, clamped_key, n);
    Py_DECREF(n);
    return set;
}

/* A KeyValue not counted among the export's values: scopes' and links', checked, not kept. */
static int uncounted_key_value(Ctx *c, Buf b) {
    Py_ssize_t values = c->values;
    int r = key_value(c, b, NULL, 0, -1, NULL);
    c->values = values;
    return r;
}

/* A message whose fields are strings (numbers in string_numbers), attributes (attributes_number)
   and scalars: checked only. */
static int check_message(Ctx *c, Buf b, const uint32_t *string_numbers, int n_strings,
                         uint32_t attributes_number) {
    Field f;
    int r;
    while ((r = next_field(c, &b, &f)) > 0) {
        if (f.wt != WT_LEN) continue;
        if (f.number == attributes_number) {
            if (uncounted_key_value(c, f.sub) < 0) return -1;
            continue;
        }
        for (int i = 0; i < n_strings; i++)
            if (f.number == string_numbers[i] && check_string(c, &f) < 0) return -1;
    }
    return r;
}

static const uint32_t ENTITY_REF_STRINGS[] = {1, 2, 3, 4};
static const uint32_t LINK_STRINGS[] = {3};

static PyObject *hex_id(const Field *f) {
    static const char digits[] = "0123456789abcdef";
    char text[32];
    Py_ssize_t n = f->sub.end - f->sub.p;
    for (Py_ssize_t i = 0; i < n; i++) {
        text[2 * i] = digits[f->sub.p[i] >> 4];
        text[2 * i + 1] = digits[f->sub.p[i] & 15];
    }
    return PyUnicode_FromStringAndSize(text, 2 * n);
}

static int event(Ctx *c, Buf b, PyObject *events) {
    PyObject *name = NULL, *attributes = NULL;
    uint64_t time = 0;
    Marks marks = {0, 0};
    if (c->build && (attributes = PyDict_New()) == NULL) return -1;
    Field f;
    int r;
    while ((r = next_field(c, &b, &f)) > 0) {
        if (f.number == 1 && f.wt == WT_I64) {
            time = f.value;
        } else if (f.number == 2) {
            if (string_field(c, &f, c->build ? &name : NULL) < 0) goto error;
        } else if (f.number == 3 && f.wt == WT_LEN) {
            if (key_value(c, f.sub, attributes, 0, c->max_attrs, &marks) < 0) goto error;
        }
    }
    if (r < 0) goto error;
    if (time > MAX_TIME_NS && !c->event_bad) {
        c->event_bad = 1;
        c->event_time = time;
    }
    if (c->build) {
        if (mark(attributes, &marks) < 0) goto error;
        if (name == NULL && (name = PyUnicode_FromStringAndSize("", 0)) == NULL) goto error;
        PyObject *values[3] = {Py_NewRef(name), PyLong_FromUnsignedLongLong(time), Py_NewRef(attributes)};
        PyObject *e = new_record(c->raw_event, &event_layout, event_fields, values, 3);
        if (e == NULL) goto error;
        int appended = PyList_Append(events, e);
        Py_DECREF(e);
        if (appended < 0) goto error;
    }
    Py_XDECREF(name);
    Py_XDECREF(attributes);
    return 0;
error:
    Py_XDECREF(name);
    Py_XDECREF(attributes);
    return -1;
}

static int span(Ctx *c, Buf b, PyObject *resource, PyObject *scope) {
    Field trace_id = {0}, span_id = {0}, parent_id = {0};
    PyObject *name = NULL, *status_message = NULL, *attributes = NULL, *events = NULL;
    uint64_t start = 0, end = 0;
    long long status_code = 0;
    int seen_status = 0;
    Marks marks = {0, 0};
    c->event_bad = 0;
    if (c->build && ((attributes = PyDict_New()) == NULL || (events = PyList_New(0)) == NULL))
        goto error;
    Field f;
    int r;
    while ((r = next_field(c, &b, &f)) > 0) {
        switch (f.number) {
        case 1:
            if (f.wt == WT_LEN) trace_id = f;
            break;
        case 2:
            if (f.wt == WT_LEN) span_id = f;
            break;
        case 3: /* trace_state */
            if (string_field(c, &f, NULL) < 0) goto error;
            break;
        case 4:
            if (f.wt == WT_LEN) parent_id = f;
            break;
        case 5:
            if (string_field(c, &f, c->build ? &name : NULL) < 0) goto error;
            break;
        case 7:
            if (f.wt == WT_I64) start = f.value;
            break;
        case 8:
            if (f.wt == WT_I64) end = f.value;
            break;
        case 9:
            if (f.wt == WT_LEN && key_value(c, f.sub, attributes, 0, c->max_attrs, &marks) < 0) goto error;
            break;
        case 11: /* each event counts as a value (as in pilothouse.tracing.otlp) */
            c->values++;
            if (f.wt == WT_LEN && event(c, f.sub, events) < 0) goto error;
            break;
        case 13: /* links: checked, not kept; each counts as a value */
            c->values++;
            if (f.wt == WT_LEN && check_message(c, f.sub, LINK_STRINGS, 1, 4) < 0) goto error;
            break;
        case 15: { /* status */
            if (f.wt != WT_LEN) break;
            if (seen_status++) {
                fail(c, "status given twice");
                goto error;
            }
            Buf s = f.sub;
            Field g;
            int rs;
            while ((rs = next_field(c, &s, &g)) > 0) {
                if (g.number == 2) {
                    if (string_field(c, &g, c->build ? &status_message : NULL) < 0) goto error;
                } else if (g.number == 3 && g.wt == WT_VARINT) {
                    status_code = (int32_t)(uint32_t)g.value; /* an enum is an int32 */
                }
            }
            if (rs < 0) goto error;
            break;
        }
        default:
            break;
        }
    }
    if (r < 0) goto error;
    Py_ssize_t parent_len = parent_id.sub.end - parent_id.sub.p;
    if (trace_id.sub.end - trace_id.sub.p != 16 || span_id.sub.end - span_id.sub.p != 8 ||
        (parent_len != 0 && parent_len != 8)) {
        fail(c, "invalid trace_id, span_id or parent_span_id");
        goto error;
    }
    const char *bad = NULL;
    uint64_t bad_time = 0;
    if (start > MAX_TIME_NS) {
        bad = "start_time_unix_nano";
        bad_time = start;
    } else if (end > MAX_TIME_NS) {
        bad = "end_time_unix_nano";
        bad_time = end;
    } else if (c->event_bad) {
        bad = "event time_unix_nano";
        bad_time = c->event_time;
    }
    if (bad != NULL) { /* rejected alone: the rest of the export is kept */
        if (c->rejected++ == 0) {
            static const char digits[] = "0123456789abcdef";
            char hex[17];
            for (int i = 0; i < 8; i++) {
                hex[2 * i] = digits[span_id.sub.p[i] >> 4];
                hex[2 * i + 1] = digits[span_id.sub.p[i] & 15];
            }
            hex[16] = 0;
            snprintf(c->reason, sizeof c->reason, "span %s: %s %llu is outside 1970-2200", hex, bad,
                     (unsigned long long)bad_time);
        }
        goto done;
    }
    c->count++;
    if (c->build) {
        if (mark(attributes, &marks) < 0) goto error;
        if (end < start) {
            if (mark_clamped(attributes, end) < 0) goto error;
            end = start;
        }
        PyObject *args[12] = {NULL};
        args[0] = hex_id(&trace_id);
        args[1] = hex_id(&span_id);
        args[2] = parent_len ? hex_id(&parent_id) : Py_NewRef(Py_None);
        args[3] = name ? Py_NewRef(name) : PyUnicode_FromStringAndSize("", 0);
        args[4] = PyLong_FromUnsignedLongLong(start);
        args[5] = PyLong_FromUnsignedLongLong(end);
        args[6] = PyLong_FromLongLong(status_code);
        args[7] = status_message ? Py_NewRef(status_message) : PyUnicode_FromStringAndSize("", 0);
        args[8] = Py_NewRef(attributes);
        args[9] = Py_NewRef(resource);
        args[10] = Py_NewRef(scope);
        args[11] = Py_NewRef(events);
        PyObject *raw = new_record(c->raw_span, &span_layout, span_fields, args, 12);
        if (raw == NULL) goto error;
        int appended = PyList_Append(c->spans, raw);
        Py_DECREF(raw);
        if (appended < 0) goto error;
    }
done:
    Py_XDECREF(name);
    Py_XDECREF(status_message);
    Py_XDECREF(attributes);
    Py_XDECREF(events);
    return 0;
error:
    Py_XDECREF(name);
    Py_XDECREF(status_message);
    Py_XDECREF(attributes);
    Py_XDECREF(events);
    return -1;
}

/* Finds the one occurrence of singular message field `number` (Buf with p == NULL if none). */
static int find_single(Ctx *c, Buf b, uint32_t number, Buf *found, const char *twice) {
    found->p = found->end = NULL;
    Field f;
    int r;
    while ((r = next_field(c, &b, &f)) > 0) {
        if (f.number != number || f.wt != WT_LEN) continue;
        if (found->p != NULL) return fail(c, twice);
        *found = f.sub;
    }
    return r;
}

static int scope_spans(Ctx *c, Buf b, PyObject *resource) {
    Buf scope_buf;
    PyObject *scope = NULL;
    if (find_single(c, b, 1, &scope_buf, "scope given twice") < 0) return -1;
    if (scope_buf.p != NULL) {
        Field f;
        int r;
        while ((r = next_field(c, &scope_buf, &f)) > 0) {
            if (f.number == 1) {
                if (string_field(c, &f, c->build ? &scope : NULL) < 0) goto error;
            } else if (f.number == 2) {
                if (string_field(c, &f, NULL) < 0) goto error;
            } else if (f.number == 3 && f.wt == WT_LEN) {
                if (uncounted_key_value(c, f.sub) < 0) goto error;
            }
        }
        if (r < 0) goto error;
    }
    if (c->build && scope == NULL && (scope = PyUnicode_FromStringAndSize("", 0)) == NULL) goto error;
    Field f;
    int r;
    while ((r = next_field(c, &b, &f)) > 0) {
        if (f.wt != WT_LEN) continue;
        if (f.number == 2) {
            if (span(c, f.sub, resource, scope) < 0) goto error;
        } else if (f.number == 3) {
            if (check_string(c, &f) < 0) goto error;
        }
    }
    if (r < 0) goto error;
    Py_XDECREF(scope);
    return 0;
error:
    Py_XDECREF(scope);
    return -1;
}

static int resource_spans(Ctx *c, Buf b) {
    Buf resource_buf;
    PyObject *resource = NULL;
    if (find_single(c, b, 1, &resource_buf, "resource given twice") < 0) return -1;
    Marks marks = {0, 0};
    if (c->build && (resource = PyDict_New()) == NULL) return -1;
    if (resource_buf.p != NULL) {
        Field f;
        int r;
        while ((r = next_field(c, &resource_buf, &f)) > 0) {
            if (f.wt != WT_LEN) continue;
            if (f.number == 1) {
                if (key_value(c, f.sub, resource, 0, c->max_attrs, &marks) < 0) goto error;
            } else if (f.number == 3) {
                if (check_message(c, f.sub, ENTITY_REF_STRINGS, 4, 0) < 0) goto error;
            }
        }
        if (r < 0) goto error;
    }
    if (c->build && mark(resource, &marks) < 0) goto error;
    Field f;
    int r;
    while ((r = next_field(c, &b, &f)) > 0) {
        if (f.wt != WT_LEN) continue;
        if (f.number == 2) {
            if (scope_spans(c, f.sub, resource) < 0) goto error;
        } else if (f.number == 3) {
            if (check_string(c, &f) < 0) goto error;
        }
    }
    if (r < 0) goto error;
    Py_XDECREF(resource);
    return 0;
error:
    Py_XDECREF(resource);
    return -1;
}

static int request(Ctx *c, Buf b) {
    Field f;
    int r;
    while ((r = next_field(c, &b, &f)) > 0)
        if (f.number == 1 && f.wt == WT_LEN && resource_spans(c, f.sub) < 0) return -1;
    return r;
}

static PyObject *run(Ctx *c, PyObject *body) {
    Py_buffer view;
    if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) return NULL;
    Buf b = {(const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    int r;
    if (c->build || view.len < RELEASE_GIL_BYTES) {
        r = request(c, b);
    } else {
        /* Checking touches no Python object: other threads (the event loop) run meanwhile. Not for
           a small body: letting the GIL go hands it to any busy thread, and taking it back can
           wait a whole switch interval (5 ms), far longer than the check. */
        Py_BEGIN_ALLOW_THREADS
        r = request(c, b);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&view);
    if (r < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, c->error ? c->error : "malformed body");
        return NULL;
    }
    return Py_NewRef(Py_None);
}

static PyObject *check(PyObject *module, PyObject *body) {
    (void)module;
    Ctx c = {0};
    c.max_attrs = c.max_value_bytes = c.max_key_bytes = -1;
    PyObject *done = run(&c, body);
    if (done == NULL) return NULL;
    Py_DECREF(done);
    if (c.rejected) return Py_BuildValue("(nnns)", c.count, c.rejected, c.values, c.reason);
    return Py_BuildValue("(nnnO)", c.count, c.rejected, c.values, Py_None);
}

static PyObject *decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if ((nargs != 5 && nargs != 6) || !PyType_Check(args[1]) || !PyType_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "decode(body, RawSpan, RawEvent, max_attributes, max_value_bytes[, max_key_bytes])");
        return NULL;
    }
    Ctx c = {0};
    c.max_attrs = PyLong_AsSsize_t(args[3]);
    c.max_value_bytes = PyLong_AsSsize_t(args[4]);
    c.max_key_bytes = nargs == 6 ? PyLong_AsSsize_t(args[5]) : 0; /* 5 arguments: keys unlimited */
    if ((c.max_attrs == -1 || c.max_value_bytes == -1 || c.max_key_bytes == -1) && PyErr_Occurred())
        return NULL;
    if (c.max_attrs < 0 || c.max_value_bytes < 0 || c.max_key_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "limits must be >= 0");
        return NULL;
    }
    if (nargs == 5) c.max_key_bytes = -1;
    c.build = 1;
    c.raw_span = args[1];
    c.raw_event = args[2];
    c.b64 = b64_function;
    if ((c.spans = PyList_New(0)) == NULL) return NULL;
    PyObject *done = run(&c, args[0]);
    if (done == NULL) {
        Py_DECREF(c.spans);
        return NULL;
    }
    Py_DECREF(done);
    return c.spans;
}

static PyMethodDef methods[] = {
    {"check", (PyCFunction)check, METH_O,
     "Check an OTLP/protobuf trace export: (spans accepted, spans rejected, attribute values, reason)."},
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "decode(body, RawSpan, RawEvent, max_attributes, max_value_bytes[, max_key_bytes]): the accepted "
     "spans."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_otlp_reader", "The C reader of OTLP/protobuf trace exports.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__otlp_reader(void) {
    const uint16_t one = 1;
    if (*(const uint8_t *)&one != 1) {
        PyErr_SetString(PyExc_ImportError, "_otlp_reader reads fixed64 fields as little-endian");
        return NULL;
    }
    PyObject *base64 = PyImport_ImportModule("base64");
    if (base64 == NULL) return NULL;
    b64_function = PyObject_GetAttrString(base64, "b64encode");
    Py_DECREF(base64);
    if (b64_function == NULL) return NULL;
    static const char *span_names[12] = {"trace_id", "span_id", "parent_id", "name", "start_ns", "end_ns",
                                         "status_code", "status_message", "attributes", "resource",
                                         "scope", "events"};
    static const char *event_names[3] = {"name", "time_ns", "attributes"};
    for (int i = 0; i < 12; i++)
        if ((span_fields[i] = PyUnicode_InternFromString(span_names[i])) == NULL) return NULL;
    for (int i = 0; i < 3; i++)
        if ((event_fields[i] = PyUnicode_InternFromString(event_names[i])) == NULL) return NULL;
    return PyModule_Create(&module_def);
}
