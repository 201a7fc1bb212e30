/* Found by interpose.c only through its RUNPATH: checks dlopen keeps the caller. */
__attribute__((visibility("default"))) int runpath_value(void);

int runpath_value(void) {
        return 7;
}
