/* asgi_task: running an application's coroutine as an asyncio task: the
 * Runner coroutine that finishes its request inline, the eager first steps
 * with their lazily initialised RequestTask, and the awaitables that wake the
 * application (Ready, asgi_resolve). */
#include "asgi_internal.h"

#include <structmember.h> /* PyMemberDef */

/* Interned strings, created once. */
static struct { PyObject *done, *set_result, *set_exception, *cancel; } S;

static int strings_init(void) {
  static const asgi_intern_entry table[] = {
      {&S.done, "done"},
      {&S.set_result, "set_result"},
      {&S.set_exception, "set_exception"},
      {&S.cancel, "cancel"},
  };
  return ASGI_INTERN(table);
}

/* ---- Ready: an awaitable that is already done ------------------------------ */

typedef struct {
  PyObject_HEAD PyObject *value;
} ReadyObject;

static PyTypeObject ReadyType;

PyObject *asgi_ready_new(PyObject *value) {
  ReadyObject *r = PyObject_New(ReadyObject, &ReadyType);
  if (!r)
    return NULL;
  r->value = Py_NewRef(value);
  return (PyObject *)r;
}

static void ready_dealloc(ReadyObject *r) {
  Py_XDECREF(r->value);
  PyObject_Free(r);
}

static PyObject *ready_await(PyObject *self) { return Py_NewRef(self); }

static PySendResult ready_send(PyObject *self, PyObject *arg, PyObject **result) {
  (void)arg;
  ReadyObject *r = (ReadyObject *)self;
  *result = Py_NewRef(r->value);
  return PYGEN_RETURN;
}

static PyObject *ready_next(PyObject *self) {
  ReadyObject *r = (ReadyObject *)self;
  if (r->value == Py_None)
    return NULL; /* StopIteration(None) */
  PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, r->value);
  if (stop) {
    PyErr_SetObject(PyExc_StopIteration, stop);
    Py_DECREF(stop);
  }
  return NULL;
}

static PyAsyncMethods ready_async = {.am_await = ready_await, .am_send = ready_send};

static PyTypeObject ReadyType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_appbin.Ready",
    .tp_basicsize = sizeof(ReadyObject),
    .tp_dealloc = (destructor)ready_dealloc,
    .tp_as_async = &ready_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = ready_next,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("An awaitable whose result is already known."),
};

/* ---- waking the application -------------------------------------------------- */

/* Resolves a pending future (if still pending) with a result or exception. */
int asgi_resolve(PyObject **waiter, PyObject *result, PyObject *exc_type, const char *msg) {
  PyObject *fut = *waiter;
  if (!fut)
    return 0;
  *waiter = NULL;
  int delivered = 0;
  PyObject *done = PyObject_CallMethodNoArgs(fut, S.done);
  if (done == Py_False) {
    PyObject *r;
    if (exc_type) {
      PyObject *exc = PyObject_CallFunction(exc_type, "s", msg);
      r = exc ? PyObject_CallMethodOneArg(fut, S.set_exception, exc) : NULL;
      Py_XDECREF(exc);
    } else {
      r = PyObject_CallMethodOneArg(fut, S.set_result, result);
    }
    if (!r)
      PyErr_WriteUnraisable(fut);
    delivered = r != NULL;
    Py_XDECREF(r);
  } else if (!done) {
    PyErr_WriteUnraisable(fut);
  }
  Py_XDECREF(done);
  Py_DECREF(fut);
  return delivered;
}

/* ---- Runner: the coroutine a request's task runs ------------------------------
 *
 * It drives the application's awaitable and, when that ends, finishes the
 * request inline: no done-callback round trip through the event loop, and
 * the task itself always ends cleanly (errors are logged here) except for
 * cancellation, which propagates. */

typedef struct RunnerObject {
  PyObject_HEAD PyObject *inner; /* the app's awaitable iterator */
  PyObject *owner;               /* the request or websocket */
  asgi_finish_fn finish;
  PyObject *loop;
  PyObject *context;         /* the context of an eager start, for its task */
  PyObject *pending;         /* what the eager first step yielded, or */
  PyObject *pending_exc;     /* the exception it propagated: its task's first step gets it */
  struct RunnerObject *next; /* the server's eager queue (a reference) */
  int done;                  /* the awaitable ended and finish() ran */
} RunnerObject;

static PyTypeObject RunnerType;

static PyObject *runner_new(PyObject *owner, asgi_finish_fn finish, PyObject *awaitable,
                            PyObject *loop) {
  PyObject *inner;
  if (PyCoro_CheckExact(awaitable)) {
    inner = Py_NewRef(awaitable);
  } else {
    unaryfunc getter =
        Py_TYPE(awaitable)->tp_as_async ? Py_TYPE(awaitable)->tp_as_async->am_await : NULL;
    if (!getter)
      return PyErr_Format(PyExc_TypeError, "the ASGI application returned %R, not an awaitable",
                          awaitable);
    if (!(inner = getter(awaitable)))
      return NULL;
  }
  RunnerObject *runner = PyObject_GC_New(RunnerObject, &RunnerType);
  if (!runner) {
    Py_DECREF(inner);
    return NULL;
  }
  runner->inner = inner;
  runner->owner = Py_NewRef(owner);
  runner->finish = finish;
  runner->loop = Py_NewRef(loop);
  runner->context = runner->pending = runner->pending_exc = NULL;
  runner->next = NULL;
  runner->done = 0;
  PyObject_GC_Track(runner);
  return (PyObject *)runner;
}

/* Turns the inner iterator's outcome into the runner's. */
static PySendResult runner_outcome(RunnerObject *self, PySendResult status, PyObject **result) {
  if (status == PYGEN_NEXT || self->done)
    return status;
  self->done = 1;
  if (status == PYGEN_RETURN) {
    Py_CLEAR(*result);
    self->finish(self->owner, NULL, 0);
  } else {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
      PyException_SetTraceback(value, tb);
    int cancelled = value && PyErr_GivenExceptionMatches(value, PyExc_BaseException) &&
                    !PyErr_GivenExceptionMatches(value, PyExc_Exception);
    self->finish(self->owner, cancelled ? NULL : value, cancelled);
    if (cancelled) { /* CancelledError, KeyboardInterrupt, SystemExit: propagate */
      PyErr_Restore(type, value, tb);
      *result = NULL;
      return PYGEN_ERROR;
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
  }
  *result = Py_NewRef(Py_None);
  return PYGEN_RETURN;
}

static PySendResult runner_am_send(PyObject *self, PyObject *arg, PyObject **result) {
  RunnerObject *runner = (RunnerObject *)self;
  if (runner->pending) { /* the eager step's yield, now the task's */
    *result = runner->pending;
    runner->pending = NULL;
    return PYGEN_NEXT;
  }
  if (runner->pending_exc) {
    PyObject *exc = runner->pending_exc;
    runner->pending_exc = NULL;
    PyErr_Restore(Py_NewRef(Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
    *result = NULL;
    return PYGEN_ERROR;
  }
  if (runner->done || !runner->inner) {
    *result = Py_NewRef(Py_None);
    return PYGEN_RETURN;
  }
  return runner_outcome(runner, PyIter_Send(runner->inner, arg, result), result);
}

static PyObject *runner_send(PyObject *self, PyObject *arg) {
  PyObject *result;
  PySendResult status = runner_am_send(self, arg, &result);
  if (status == PYGEN_RETURN) {
    Py_DECREF(result);
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
  }
  return status == PYGEN_NEXT ? result : NULL;
}

static PyObject *runner_next(PyObject *self) { return runner_send(self, Py_None); }

static PyObject *runner_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  RunnerObject *runner = (RunnerObject *)self;
  Py_CLEAR(runner->pending_exc);
  if (runner->pending) {
    /* The task was cancelled before it took over the eager step's future:
     * cancel that future, as Task.cancel() would have. */
    PyObject *fut = runner->pending;
    runner->pending = NULL;
    PyObject *r = PyObject_HasAttr(fut, S.cancel) ? PyObject_CallMethodNoArgs(fut, S.cancel) : NULL;
    if (!r)
      PyErr_Clear();
    Py_XDECREF(r);
    Py_DECREF(fut);
  }
  PyObject *throw = runner->inner ? PyObject_GetAttrString(runner->inner, "throw") : NULL;
  if (!throw &&!PyErr_Occurred())
    PyErr_SetString(PyExc_RuntimeError, "the ASGI application was cleared");
  if (!throw)
    return NULL;
  PyObject *result = PyObject_Vectorcall(throw, args, (size_t)nargs, NULL);
  Py_DECREF(throw);
  PySendResult status = PYGEN_NEXT;
  if (!result) {
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
      PyErr_Clear();
      result = Py_NewRef(Py_None);
      status = PYGEN_RETURN;
    } else {
      status = PYGEN_ERROR;
    }
  }
  status = runner_outcome(runner, status, &result);
  if (status == PYGEN_RETURN) {
    Py_DECREF(result);
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
  }
  return status == PYGEN_NEXT ? result : NULL;
}

static PyObject *runner_close(PyObject *self, PyObject *noargs) {
  (void)noargs;
  RunnerObject *runner = (RunnerObject *)self;
  PyObject *r = PyObject_CallMethod(runner->inner, "close", NULL);
  if (!r)
    PyErr_Clear(); /* iterators without close() */
  Py_XDECREF(r);
  Py_RETURN_NONE;
}

static int runner_traverse(RunnerObject *self, visitproc visit, void *arg) {
  Py_VISIT(self->inner);
  Py_VISIT(self->owner);
  Py_VISIT(self->loop);
  Py_VISIT(self->context);
  Py_VISIT(self->pending);
  Py_VISIT(self->pending_exc);
  return 0;
}

static int runner_clear(RunnerObject *self) {
  Py_CLEAR(self->inner);
  Py_CLEAR(self->owner);
  Py_CLEAR(self->loop);
  Py_CLEAR(self->context);
  Py_CLEAR(self->pending);
  Py_CLEAR(self->pending_exc);
  return 0;
}

static void runner_dealloc(RunnerObject *self) {
  PyObject_GC_UnTrack(self);
  runner_clear(self);
  PyObject_GC_Del(self);
}

static PyMethodDef runner_methods[] = {
    {"send", runner_send, METH_O, "send($self, value, /)\n--\n\nResume the application."},
    {"throw", (PyCFunction)(void (*)(void))runner_throw, METH_FASTCALL,
     "throw($self, typ, val=None, tb=None, /)\n--\n\nRaise inside the application."},
    {"close", runner_close, METH_NOARGS, "close($self, /)\n--\n\nClose the application."},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods runner_async = {.am_await = ready_await, .am_send = runner_am_send};

static PyTypeObject RunnerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_appbin.Runner",
    .tp_basicsize = sizeof(RunnerObject),
    .tp_dealloc = (destructor)runner_dealloc,
    .tp_as_async = &runner_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = runner_next,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)runner_traverse,
    .tp_clear = (inquiry)runner_clear,
    .tp_methods = runner_methods,
    .tp_doc = PyDoc_STR("The coroutine a request's task runs: the app, then the finish."),
};

/* ---- Eager first steps -----------------------------------------------------------
 *
 * A request's coroutine often runs to its end without waiting for anything
 * (hello world; a FastAPI endpoint that only computes). Creating an
 * asyncio.Task for it costs more than the rest of the request in Python
 * (Task.__init__ calls the loop's Python get_debug() and call_soon(), names
 * the task and adds it to a WeakSet; then one more loop iteration runs the
 * step). So inside the pump, asgi_start_app() only queues the Runner; once
 * uv_run() has returned (where the task's step would have run, outside any
 * libuv callback, one loop iteration earlier) each queued Runner's first step
 * runs here, as a Task's step runs it: in a copy of the server's context, with
 * asyncio.current_task() set to a task.
 *
 * That task is an instance of RequestTask, an asyncio.Task subclass whose
 * Task.__init__ runs lazily: on its first attribute access (app code that
 * calls current_task().cancel(), get_name()...) or when the first step
 * suspends. Until then it is an object that sniffio, anyio's cancel scopes
 * (a weak key) and `is` comparisons can use. Once initialised, the task's
 * first step takes over what the eager step left: the future it yielded
 * (Runner.pending) or the exception it propagated (Runner.pending_exc), so
 * from there on it is an ordinary asyncio task. */

static Py_ssize_t task_runner_offset; /* RequestTask's _appbin_runner slot */

static PyObject **task_runner(PyObject *task) {
  return (PyObject **)((char *)task + task_runner_offset);
}

/* Runs Task.__init__(task, runner, loop=..., context=...) if it has not run
 * yet: from then on the task drives the runner through the event loop. */
static int task_materialize(PyObject *task) {
  RunnerObject *runner = (RunnerObject *)*task_runner(task);
  if (!runner)
    return 0;
  *task_runner(task) = NULL;
  PyObject *args = PyTuple_Pack(1, (PyObject *)runner);
  PyObject *kwargs = args ? Py_BuildValue("{sOsO}", "loop", runner->loop, "context",
                                          runner->context ? runner->context : Py_None)
                          : NULL;
  int rc = kwargs ? Py_TYPE(task)->tp_base->tp_init(task, args, kwargs) : -1;
  Py_XDECREF(args);
  Py_XDECREF(kwargs);
  Py_DECREF(runner);
  return rc;
}

static PyObject *task_getattro(PyObject *task, PyObject *name) {
  if (*task_runner(task) && task_materialize(task) != 0)
    return NULL;
  return PyObject_GenericGetAttr(task, name);
}

static int task_setattro(PyObject *task, PyObject *name, PyObject *value) {
  if (*task_runner(task) && task_materialize(task) != 0)
    return -1;
  return PyObject_GenericSetAttr(task, name, value);
}

/* The slots through which C code reaches a Future's fields without an
 * attribute lookup (await, iter, repr): set up the task first, then run
 * asyncio.Task's own. */
static unaryfunc task_base_await, task_base_repr;
static getiterfunc task_base_iter;

static PyObject *task_await(PyObject *task) {
  if (*task_runner(task) && task_materialize(task) != 0)
    return NULL;
  return task_base_await(task);
}

static PyObject *task_iter(PyObject *task) {
  if (*task_runner(task) && task_materialize(task) != 0)
    return NULL;
  return task_base_iter(task);
}

static PyObject *task_repr(PyObject *task) {
  if (*task_runner(task) && task_materialize(task) != 0)
    return NULL;
  return task_base_repr(task);
}

/* class RequestTask(asyncio.Task): __slots__ = ("_appbin_runner",), with the
 * attribute and slot hooks above. Made once per process. */
static PyObject *request_task_type(PyObject *task_type) {
  static PyObject *type;
  if (type)
    return Py_NewRef(type);
  PyObject *ns = Py_BuildValue("{s(s)ss}", "__slots__", "_appbin_runner", "__module__", "_appbin");
  PyObject *t =
      ns ? PyObject_CallFunction((PyObject *)&PyType_Type, "s(O)O", "RequestTask", task_type, ns)
         : NULL;
  Py_XDECREF(ns);
  PyObject *slot = t ? PyObject_GetAttrString(t, "_appbin_runner") : NULL;
  if (!slot) {
    Py_XDECREF(t);
    return NULL;
  }
  if (!Py_IS_TYPE(slot, &PyMemberDescr_Type)) {
    Py_DECREF(slot);
    Py_DECREF(t);
    return PyErr_Format(PyExc_TypeError, "RequestTask has no slot");
  }
  task_runner_offset = ((PyMemberDescrObject *)slot)->d_member->offset;
  Py_DECREF(slot);
  PyTypeObject *base = (PyTypeObject *)task_type, *sub = (PyTypeObject *)t;
  /* eager_step() allocates a RequestTask without calling Task.__new__: sound
   * while asyncio.Task's __new__ is PyType_GenericNew (3.11 to 3.14: an
   * allocation) and __init__ sets up everything (task_materialize() runs it). */
  if (base->tp_new != PyType_GenericNew) {
    Py_DECREF(t);
    return PyErr_Format(PyExc_TypeError, "asyncio.Task has a __new__ of its own");
  }
  if (!base->tp_as_async || !base->tp_as_async->am_await || !base->tp_iter || !base->tp_repr ||
      !sub->tp_as_async) {
    Py_DECREF(t);
    return PyErr_Format(PyExc_TypeError, "asyncio.Task lacks await, iter or repr");
  }
  task_base_await = base->tp_as_async->am_await;
  task_base_iter = base->tp_iter;
  task_base_repr = base->tp_repr;
  sub->tp_getattro = task_getattro;
  sub->tp_setattro = task_setattro;
  sub->tp_as_async->am_await = task_await; /* the heap type's own table */
  sub->tp_iter = task_iter;
  sub->tp_repr = task_repr;
  PyType_Modified(sub);
  type = t;
  return Py_NewRef(type);
}

static void eager_enqueue(ServerObject *s, PyObject *runner) {
  if (s->eager_tail)
    ((RunnerObject *)s->eager_tail)->next = (RunnerObject *)runner;
  else
    s->eager_head = runner;
  s->eager_tail = runner;
}

/* asyncio's _enter_task(loop, task): no other task may be running (none
 * is, in the pump). 3.11 to 3.13: on its dict, as _asyncio does; 3.14:
 * through _swap_current_task (the running task is in the thread state). */
static int enter_task(ServerObject *s, PyObject *task) {
#if APPBIN_ASYNCIO_TASK_IN_TSTATE
  PyObject *args[2] = {s->loop, task};
  PyObject *running = PyObject_Vectorcall(s->current_tasks, args, 2, NULL);
  if (!running)
    return -1;
  if (running == Py_None) {
    Py_DECREF(running);
    return 0;
  }
  /* put the running task back, then fail as _enter_task() would */
  args[1] = running;
  PyObject *r = PyObject_Vectorcall(s->current_tasks, args, 2, NULL);
  Py_XDECREF(r);
  if (r)
    PyErr_Format(PyExc_RuntimeError,
                 "Cannot enter into task %R while another task %R is being executed.", task,
                 running);
  Py_DECREF(running);
  return -1;
#else
  PyObject *running = PyDict_SetDefault(s->current_tasks, s->loop, task);
  if (running == task)
    return 0;
  if (running)
    PyErr_Format(PyExc_RuntimeError,
                 "Cannot enter into task %R while another task %R is "
                 "being executed.",
                 task, running);
  return -1;
#endif
}

/* asyncio's _leave_task(loop, task). */
static int leave_task(ServerObject *s, PyObject *task) {
  (void)task;
#if APPBIN_ASYNCIO_TASK_IN_TSTATE
  PyObject *args[2] = {s->loop, Py_None};
  PyObject *running = PyObject_Vectorcall(s->current_tasks, args, 2, NULL);
  if (!running)
    return -1;
  assert(running == task);
  Py_DECREF(running);
  return 0;
#else
  return PyDict_DelItem(s->current_tasks, s->loop);
#endif
}

/* The runner's first step, as its task's first step would run it. -1 with
 * an exception set if it could not be run or handed over to its task. */
static int eager_step(ServerObject *s, RunnerObject *runner) {
  PyObject *context = PyContext_Copy(s->context);
  PyTypeObject *type = (PyTypeObject *)s->eager_task_type;
  PyObject *task = context ? type->tp_alloc(type, 0) : NULL;
  if (!task) {
    Py_XDECREF(context);
    return -1;
  }
  Py_XSETREF(runner->context, context);
  *task_runner(task) = Py_NewRef((PyObject *)runner);
  if (PyContext_Enter(context) != 0) {
    Py_DECREF(task);
    return -1;
  }
  if (enter_task(s, task) != 0) {
    PyContext_Exit(context);
    Py_DECREF(task);
    return -1;
  }
  PyObject *result, *type_, *exc, *tb;
  PySendResult status = runner_am_send((PyObject *)runner, Py_None, &result);
  PyErr_Fetch(&type_, &exc, &tb);
  if (leave_task(s, task) != 0)
    PyErr_WriteUnraisable(task);
  if (PyContext_Exit(context) != 0)
    PyErr_WriteUnraisable(task);
  int rc = 0;
  if (status == PYGEN_RETURN) {
    Py_DECREF(result); /* done; a task initialised meanwhile returns None */
  } else if (status == PYGEN_NEXT) {
    runner->pending = result;
    rc = task_materialize(task);
  } else {
    PyErr_NormalizeException(&type_, &exc, &tb);
    if (exc && tb)
      PyException_SetTraceback(exc, tb);
    /* A cancellation nobody can see is dropped; KeyboardInterrupt and
     * SystemExit go through the task to the loop, as they would have. */
    if (exc &&
        (*task_runner(task) == NULL || !PyErr_GivenExceptionMatches(exc, s->cancelled_error))) {
      runner->pending_exc = Py_NewRef(exc);
      rc = task_materialize(task);
    }
    Py_XDECREF(type_);
    Py_XDECREF(exc);
    Py_XDECREF(tb);
  }
  Py_DECREF(task);
  return rc;
}

void asgi_task_run_eager(ServerObject *s) {
  s->in_eager = 1;
  /* pipelined responses answered in this loop leave in one write each */
  if (s->http)
    http_server_hold_output(s->http, true);
  while (s->eager_head) {
    RunnerObject *runner = (RunnerObject *)s->eager_head;
    s->eager_head = (PyObject *)runner->next;
    if (!s->eager_head)
      s->eager_tail = NULL;
    runner->next = NULL;
    if (eager_step(s, runner) != 0) {
      PyObject *type, *exc, *tb;
      PyErr_Fetch(&type, &exc, &tb);
      PyErr_NormalizeException(&type, &exc, &tb);
      if (!runner->done) { /* answer 500 rather than leave the request hanging */
        runner->done = 1;
        runner->finish(runner->owner, exc ? exc : Py_None, 0);
      } else {
        asgi_log_exception(s, "cannot run the ASGI application", exc ? exc : Py_None);
      }
      Py_XDECREF(type);
      Py_XDECREF(exc);
      Py_XDECREF(tb);
    }
    Py_DECREF(runner);
  }
  s->in_eager = 0;
  if (s->http)
    http_server_hold_output(s->http, false);
}

/* ---- starting the application ------------------------------------------------- */

int asgi_start_app(ServerObject *s, PyObject *scope, PyObject *receive, PyObject *send,
                   PyObject *owner, asgi_finish_fn finish) {
  PyObject *call_args[3] = {scope, receive, send};
  PyObject *coro = PyObject_Vectorcall(s->app, call_args, 3, NULL);
  PyObject *runner = coro ? runner_new(owner, finish, coro, s->loop) : NULL;
  Py_XDECREF(coro);
  /* Inside the pump the Runner is queued: its first step runs when uv_run()
   * returns. So is one started while the queue runs: a pipelined request,
   * parsed when the one before it finished in its own eager step, runs next
   * in this loop rather than as a Task a loop iteration later (a Task cost
   * 10.8k of the 44k instructions a pipelined hello world took). */
  if (runner && (s->in_pump || s->in_eager)) {
    eager_enqueue(s, runner);
    return 0;
  }
  /* asyncio.Task(runner, loop=loop, context=<a copy of the server's>), as
   * loop.create_task() does. */
  PyObject *context = runner ? PyContext_Copy(s->context) : NULL;
  PyObject *args[3] = {runner, s->loop, context};
  PyObject *task = context ? PyObject_Vectorcall(s->task_type, args, 1, s->task_kwnames) : NULL;
  Py_XDECREF(context);
  Py_XDECREF(runner);
  if (!task)
    return -1;
  Py_DECREF(task);
  return 0;
}

/* ---- setup ------------------------------------------------------------------------ */

/* asyncio.Task, with Runner registered as a collections.abc.Coroutine so
 * that Task accepts it. */
static PyObject *runner_task_type(void) {
  PyObject *abc = PyImport_ImportModule("collections.abc");
  PyObject *coroutine = abc ? PyObject_GetAttrString(abc, "Coroutine") : NULL;
  Py_XDECREF(abc);
  PyObject *reg = coroutine ? PyObject_CallMethod(coroutine, "register", "O", &RunnerType) : NULL;
  Py_XDECREF(coroutine);
  if (!reg)
    return NULL;
  Py_DECREF(reg);
  PyObject *asyncio = PyImport_ImportModule("asyncio");
  PyObject *task = asyncio ? PyObject_GetAttrString(asyncio, "Task") : NULL;
  Py_XDECREF(asyncio);
  return task;
}

/* What the eager first steps need from _asyncio and asyncio. */
static int asyncio_hooks(ServerObject *s) {
  PyObject *mod = PyImport_ImportModule("_asyncio");
  if (!mod)
    return -1;
#if APPBIN_ASYNCIO_TASK_IN_TSTATE
  s->current_tasks = PyObject_GetAttrString(mod, "_swap_current_task");
  Py_DECREF(mod);
  if (!s->current_tasks)
    return -1;
  if (!PyCallable_Check(s->current_tasks)) {
    PyErr_SetString(PyExc_TypeError, "_asyncio._swap_current_task is not callable");
    return -1;
  }
#else
  s->current_tasks = PyObject_GetAttrString(mod, "_current_tasks");
  Py_DECREF(mod);
  if (!s->current_tasks)
    return -1;
  if (!PyDict_Check(s->current_tasks)) {
    PyErr_SetString(PyExc_TypeError, "_asyncio._current_tasks is not a dict");
    return -1;
  }
#endif
  if (!(mod = PyImport_ImportModule("asyncio")))
    return -1;
  s->cancelled_error = PyObject_GetAttrString(mod, "CancelledError");
  Py_DECREF(mod);
  return s->cancelled_error ? 0 : -1;
}

int asgi_task_setup(ServerObject *s) {
  if (!(s->task_type = runner_task_type()) ||
      !(s->task_kwnames = Py_BuildValue("(ss)", "loop", "context")) ||
      !(s->eager_task_type = request_task_type(s->task_type)) || asyncio_hooks(s) != 0)
    return -1;
  return 0;
}

void asgi_task_clear_eager(ServerObject *s) {
  while (s->eager_head) {
    RunnerObject *runner = (RunnerObject *)s->eager_head;
    s->eager_head = (PyObject *)runner->next;
    runner->next = NULL;
    Py_DECREF(runner);
  }
  s->eager_tail = NULL;
}

int asgi_task_init(void) {
  if (strings_init() != 0 || PyType_Ready(&ReadyType) < 0 || PyType_Ready(&RunnerType) < 0)
    return -1;
  return 0;
}
