-- expect: 21-console-log-and-stdio.lua:6: stdio: a console goes to a log file or to the terminal, not both
local vmlua = require "vmlua"

vmlua.vm {
  boot = vmlua.linux { kernel = "fixtures/vmlinuz" },
  console = vmlua.console { log = "dev.log", stdio = true },
}
