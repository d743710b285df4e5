-- A team's recipe: the busybox guest serving a directory over HTTP (busybox
-- httpd) on a forwarded 127.0.0.1 port.
--   VMLUA_PATH=examples/recipes vmlua run web port=8080
--   VMLUA_PATH=examples/recipes vmlua run web --help
local vmlua = require "vmlua"

return vmlua.recipe {
  description = "A small web server VM: busybox httpd on a forwarded local port",
  params = {
    cpus = { type = "integer", default = 1, description = "vCPUs" },
    memory = { type = "size", default = "256M", description = "guest RAM" },
    port = { type = "integer", default = 0, description = "host port forwarded to port 80 (0: a free one)" },
    page = { type = "string", default = "hello from web", description = "what the server's index page says" },
  },
  define = function(p)
    -- required here, not at the top: `vmlua recipes` reads the top level in the sandbox, which gives only vmlua
    local guest = require("vmlua.runtime").cache() .. "/guests/" .. vmlua.host.arch .. "/"
    local vm = vmlua.vm {
      name = "web",
      cpus = p.cpus,
      memory = p.memory,
      boot = vmlua.linux { kernel = guest .. "vmlinuz", initrd = guest .. "initrd.img" },
      net = { vmlua.nat { forward = { [p.port] = 80 } } },
    }
    -- post-boot: start the server once the shell answers
    vm:on("running", function()
      vm:expect("vmlua# ", { timeout = 120 })
      vm:run(string.format("mkdir -p /www && echo %q > /www/index.html && httpd -h /www", p.page))
      print(string.format("web: serving on 127.0.0.1:%d", vm:ports()[80]))
    end)
    return vm
  end,
}
