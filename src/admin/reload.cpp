// RELOAD and SHUTDOWN: handed to the App's control thread through the Runtime.
#include "pgrouter/admin/handlers.hpp"
#include "pgrouter/util/task.hpp"

#include "pgrouter/app/runtime.hpp"
#include "pgrouter/session/errors.hpp"

#include <atomic>
#include <thread>

namespace pgrouter::admin {

namespace {
namespace sqlstate = session::sqlstate;
}

// RELOAD: the whole file is validated; on any problem the running config stays
// and the problems come back as the error. Runtime::reload blocks until the
// control thread has done it, so it runs on a thread of its own, never on a worker.
Task<void> reload(Context& ctx, const Command& cmd) {
    if (cmd.size() != 1) co_return invalid_command(ctx, cmd);
    if (!ctx.rt.reload) {
        ctx.error(sqlstate::feature_not_supported, "RELOAD is not available");
        co_return;
    }
    struct Outcome {
        std::atomic<bool> done{false};
        std::string problems;
    };
    auto outcome = std::make_shared<Outcome>();
    std::thread([outcome, fn = ctx.rt.reload] {
        outcome->problems = fn();
        outcome->done.store(true, std::memory_order_release);
    }).detach();
    // Polling keeps the worker free and needs nothing from the thread but the flag.
    while (!outcome->done.load(std::memory_order_acquire)) co_await sleep_for(ctx, std::chrono::milliseconds(10));
    if (!outcome->problems.empty()) {
        auto text = outcome->problems;
        while (!text.empty() && text.back() == '\n') text.pop_back();
        ctx.error(sqlstate::config_file_error, "RELOAD failed, the running configuration is unchanged:\n" + text);
        co_return;
    }
    ctx.complete("RELOAD");
}

// SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS]: a safe shutdown either way:
// the listeners close, idle clients are told, running transactions may finish
// (bounded by shutdown_timeout). The console that asked is closed after the reply.
Task<void> shutdown(Context& ctx, const Command& cmd) {
    auto mode = cmd.keyword(1);
    if (cmd.size() > 2 || (cmd.size() == 2 && mode != "WAIT_FOR_SERVERS" && mode != "WAIT_FOR_CLIENTS"))
        co_return invalid_command(ctx, cmd);
    if (!ctx.rt.shutdown) {
        ctx.error(sqlstate::feature_not_supported, "SHUTDOWN is not available");
        co_return;
    }
    ctx.rt.shutdown(false);
    ctx.complete("SHUTDOWN");
    ctx.close = true;
}

}  // namespace pgrouter::admin
