"""QEMU's slirp runs this once per guest connection to the sealed guest's
10.0.2.100:80 (`guestfwd=...-cmd:`), with the connection on stdin/stdout:
relay it to the conductor on 127.0.0.1:<port>. Under `restrict=on` this is
the guest's only way out.  usage: guestfwd-relay.py PORT"""
import os
import socket
import sys
import threading

s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))


def up():
    while True:
        d = os.read(0, 65536)
        if not d:
            break
        s.sendall(d)
    s.shutdown(socket.SHUT_WR)


threading.Thread(target=up, daemon=True).start()
while True:
    d = s.recv(65536)
    if not d:
        break
    while d:
        d = d[os.write(1, d):]
