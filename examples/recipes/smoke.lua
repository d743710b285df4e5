-- Built on web: fetches the page from inside the guest, prints it and stops
-- the VM, so that CI can run it and read the exit status.
--   VMLUA_PATH=examples/recipes vmlua run smoke page="it works" cpus=1
local web = require "web" -- or require("vmlua").recipe.find "web"

return web:extend {
  description = "web, checked: fetch the page in the guest, print it, stop",
  params = {
    memory = { default = "192M" },
    path = { type = "string", default = "/index.html", description = "the page to fetch" },
  },
  define = function(p, vm)
    vm:on("running", function()
      vm:expect("vmlua# ", { timeout = 120 })
      -- vm:run queues: web's own step (which starts httpd) runs first
      local out, status = vm:run("wget -q -O - http://127.0.0.1" .. p.path)
      io.stdout:write("smoke: ", out)
      io.stdout:flush()
      vm:stop()
      if status ~= 0 then error("smoke: wget failed with status " .. status) end
    end)
  end,
}
