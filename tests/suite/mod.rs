mod seccomp;
