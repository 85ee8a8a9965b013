/* The normaliser's per-attribute routing loop in C (pilothouse.tracing.conventions).

   Why it exists: every attribute of every span goes through this loop, a dict lookup and a few
   branches each, where the interpreter's per-iteration overhead is most of the cost. Measure it
   against its reference with `python benchmarks/speedups.py`, end to end with
   `python benchmarks/ingest.py`. Built by hatch_build.py at install. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* sort_attributes(attrs, routes, route): the one pass of conventions._sort_attributes over a span's
   attributes (an accelerator behind pilothouse._speedups; that function is its reference, and it
   must give the same result).
   routes maps an attribute name to its route, a tuple (where, name, n); route(key) makes (and
   remembers) a missing one. Where: ROUTE_SLOT (the value goes to slot `name` unless an earlier-ranked
   name, rank n, filled it; None and "" fill nothing), ROUTE_DROP, ROUTE_GROUP (into group `name`
   under the key less its first n characters), ROUTE_REST (kept under its own key). Returns
   (slots, groups, rest). */
enum { ROUTE_SLOT = 0, ROUTE_DROP = 1, ROUTE_GROUP = 2, ROUTE_REST = 3 };

static int sort_one(PyObject *key, PyObject *value, PyObject *route, PyObject *slots, PyObject *ranks,
                    PyObject *groups, PyObject *rest) {
    if (!PyTuple_CheckExact(route) || PyTuple_GET_SIZE(route) != 3) {
        PyErr_SetString(PyExc_TypeError, "a route is a tuple (where, name, n)");
        return -1;
    }
    long where = PyLong_AsLong(PyTuple_GET_ITEM(route, 0));
    PyObject *name = PyTuple_GET_ITEM(route, 1);
    PyObject *n_object = PyTuple_GET_ITEM(route, 2);
    long n = PyLong_AsLong(n_object);
    if ((where == -1 || n == -1) && PyErr_Occurred()) return -1;
    if (where == ROUTE_SLOT) {
        if (value == Py_None || (PyUnicode_Check(value) && PyUnicode_GET_LENGTH(value) == 0)) return 0;
        PyObject *rank = PyDict_GetItemWithError(ranks, name);
        if (rank == NULL && PyErr_Occurred()) return -1;
        if (rank != NULL) {
            long held = PyLong_AsLong(rank);
            if (held == -1 && PyErr_Occurred()) return -1;
            if (held <= n) return 0; /* an earlier name of the slot filled it */
        }
        if (PyDict_SetItem(slots, name, value) < 0) return -1;
        return PyDict_SetItem(ranks, name, n_object);
    }
    if (where == ROUTE_REST) return PyDict_SetItem(rest, key, value);
    if (where == ROUTE_GROUP) {
        if (!PyUnicode_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "a grouped attribute name must be a str");
            return -1;
        }
        PyObject *group = PyDict_GetItemWithError(groups, name); /* borrowed */
        if (group == NULL) {
            if (PyErr_Occurred() || (group = PyDict_New()) == NULL) return -1;
            int set = PyDict_SetItem(groups, name, group);
            Py_DECREF(group); /* groups holds it */
            if (set < 0) return -1;
        }
        PyObject *rest_of_key = PyUnicode_Substring(key, n, PY_SSIZE_T_MAX);
        if (rest_of_key == NULL) return -1;
        int set = PyDict_SetItem(group, rest_of_key, value);
        Py_DECREF(rest_of_key);
        return set;
    }
    return 0; /* ROUTE_DROP */
}

static PyObject *sort_attributes(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3 || !PyDict_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "sort_attributes(attrs: dict, routes: dict, route)");
        return NULL;
    }
    PyObject *attrs = args[0], *routes = args[1], *make_route = args[2];
    PyObject *slots = PyDict_New(), *ranks = PyDict_New(), *groups = PyDict_New(), *rest = PyDict_New();
    PyObject *result = NULL;
    if (slots == NULL || ranks == NULL || groups == NULL || rest == NULL) goto done;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(attrs, &pos, &key, &value)) {
        Py_INCREF(key); /* make_route may run any Python code */
        Py_INCREF(value);
        PyObject *route = PyDict_GetItemWithError(routes, key);
        if (route != NULL)
            Py_INCREF(route);
        else if (!PyErr_Occurred())
            route = PyObject_CallOneArg(make_route, key);
        int sorted = route == NULL ? -1 : sort_one(key, value, route, slots, ranks, groups, rest);
        Py_XDECREF(route);
        Py_DECREF(key);
        Py_DECREF(value);
        if (sorted < 0) goto done;
    }
    result = PyTuple_Pack(3, slots, groups, rest);
done:
    Py_XDECREF(slots);
    Py_XDECREF(ranks);
    Py_XDECREF(groups);
    Py_XDECREF(rest);
    return result;
}

static PyMethodDef methods[] = {
    {"sort_attributes", (PyCFunction)(void (*)(void))sort_attributes, METH_FASTCALL,
     "sort_attributes(attrs, routes, route): (slots, groups, rest), as conventions._sort_attributes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_attributes", "The normaliser's attribute routing loop in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__attributes(void) { return PyModule_Create(&module_def); }
