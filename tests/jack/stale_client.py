"""Why livegen holds one JACK client per process (see livegen.ports), shown on purpose.

Client A (libjack through ctypes) holds up its notification thread in a client-registration
callback: it has mapped the wake-up futex of client X, which then leaves before A hears of
it. Client B, an rtmidi MIDI input opened in this process meanwhile, gets X's slot number
and finds the slot "already connected" to X's futex: its process thread sleeps there for
good. Prints what livegen.ports.own_futex_mapped says of B right after opening, and how
many of ten messages B heard. Run by tests/test_ports.py as a process of its own.
"""

import ctypes
import subprocess
import sys
import threading
import time
from pathlib import Path

import rtmidi

from livegen.ports import jack_connect, own_futex_mapped

tag = sys.argv[1]
site = Path(rtmidi.__file__).parents[1]
lib = ctypes.CDLL(str(sorted(site.glob("python_rtmidi*/libjack*.so*"))[0]))
lib.jack_client_open.restype = ctypes.c_void_p
lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
REGISTRATION = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p)
lib.jack_set_client_registration_callback.argtypes = [ctypes.c_void_p, REGISTRATION,
                                                      ctypes.c_void_p]
lib.jack_activate.argtypes = [ctypes.c_void_p]
lib.jack_client_close.argtypes = [ctypes.c_void_p]
held, release = threading.Event(), threading.Event()


def on_registration(name: bytes, registered: int, _: object) -> None:
    if registered and name.decode() == f"X-{tag}":
        held.set()
        release.wait(10)


callback = REGISTRATION(on_registration)
status = ctypes.c_int()
a = lib.jack_client_open(f"A-{tag}".encode(), 1, ctypes.byref(status))
lib.jack_set_client_registration_callback(a, callback, None)
lib.jack_activate(a)
OPEN_AND_WAIT = ("import rtmidi, sys; out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=sys.argv[1]);"
                 " out.open_virtual_port('out'); print('up', flush=True); sys.stdin.readline()")
x = subprocess.Popen([sys.executable, "-c", OPEN_AND_WAIT, f"X-{tag}"], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, text=True)
x.stdout.readline()
assert held.wait(10), "A never heard of X"
x.stdin.close()
x.wait()
time.sleep(0.3)  # X has left; A has not heard yet
b = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=f"B-{tag}")
b.open_virtual_port("in")
print("mapped", own_futex_mapped(f"B-{tag}"), flush=True)
release.set()
time.sleep(0.3)
SEND_TEN = ("import rtmidi, sys, time;"
            " out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=sys.argv[1]);"
            " out.open_virtual_port('out'); print('up', flush=True); sys.stdin.readline();"
            " [(out.send_message([0xB0, 1, i]), time.sleep(0.01)) for i in range(10)];"
            " time.sleep(0.3)")
sender = subprocess.Popen([sys.executable, "-c", SEND_TEN, f"S-{tag}"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
sender.stdout.readline()
jack_connect(f"S-{tag}:out", f"B-{tag}:in")
time.sleep(0.1)
sender.stdin.write("go\n")
sender.stdin.close()
sender.wait()
heard = 0
while b.get_message() is not None:
    heard += 1
print("heard", heard, flush=True)
b.close_port()
lib.jack_client_close(a)
