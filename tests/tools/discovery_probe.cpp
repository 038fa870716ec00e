// discovery_probe: runs pgrouter's Consul or Patroni discovery source against a
// URL and prints every publish and status callback as one line, for tests and
// for poking at a real agent by hand.
//
//   discovery_probe consul URL [--service S] [--token T] [--dc DC] [--wait SECONDS]
//                   [--primary-tags a,b] [--replica-tags r] [--seconds N] [--until-eof] [-v]
//   discovery_probe patroni URL[,URL...] [--period SECONDS] [--seconds N] [--until-eof] [-v]
//
// Output (stdout, flushed per line; t = seconds since start):
//   [  0.012] publish source=consul primaries=10.0.0.1:5432 replicas=10.0.0.2:5432,10.0.0.3:5432 lag=-,-
//   [  0.012] status consul ok index=42
//   [  5.000] stopped
// It stops after --seconds (default 3600) or, with --until-eof, when stdin reaches end of file;
// stop() is called from a thread other than the one running the io_context.
#include "pgrouter/util/frame_alloc.hpp"  // first, as in the precompiled header of pgrouter_core
#include "pgrouter/discovery/discovery.hpp"
#include "pgrouter/routing/topology.hpp"

#include <boost/asio/io_context.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace pgrouter;
using Clock = std::chrono::steady_clock;

const Clock::time_point t0 = Clock::now();
std::mutex out_mu;

void emit(const std::string& line) {
    std::lock_guard lk(out_mu);
    double t = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("[%8.3f] %s\n", t, line.c_str());
    std::fflush(stdout);
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start <= s.size()) {
        auto comma = s.find(',', start);
        if (comma == std::string::npos) comma = s.size();
        if (comma > start) out.push_back(s.substr(start, comma - start));
        start = comma + 1;
    }
    return out;
}

std::string join(const std::vector<config::HostPort>& v) {
    std::string s;
    for (const auto& hp : v) s += (s.empty() ? "" : ",") + routing::to_string(hp);
    return s.empty() ? "-" : s;
}

std::string format(const routing::Discovered& d) {
    std::string lag;
    for (std::size_t i = 0; i < d.replicas.size(); ++i) {
        if (i) lag += ",";
        lag += i < d.replica_lag.size() && d.replica_lag[i] ? std::to_string(*d.replica_lag[i]) : "-";
    }
    return "publish source=" + d.source + " primaries=" + join(d.primaries) + " replicas=" + join(d.replicas) +
           " lag=" + (lag.empty() ? "-" : lag);
}

int usage() {
    std::fprintf(stderr,
                 "usage: discovery_probe consul URL [--service S] [--token T] [--dc DC] [--wait SECONDS]\n"
                 "                       [--primary-tags a,b] [--replica-tags r] [--seconds N] [--until-eof] [-v]\n"
                 "       discovery_probe patroni URL[,URL...] [--period SECONDS] [--seconds N] [--until-eof] [-v]\n"
                 "  (an empty --primary-tags/--replica-tags value means [])\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) return usage();
    std::string kind = argv[1];
    if (kind != "consul" && kind != "patroni") return usage();
    config::DiscoveryConfig cfg;
    std::string token;
    double seconds = 3600, period = 1.0;
    bool verbose = false, until_eof = false;
    if (kind == "consul") {
        cfg.type = config::DiscoveryType::consul;
        cfg.consul_url = argv[2];
    } else {
        cfg.type = config::DiscoveryType::patroni;
        cfg.patroni_urls = split(argv[2]);
    }
    for (int i = 3; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "-v") {
            verbose = true;
            continue;
        }
        if (a == "--until-eof") {
            until_eof = true;
            continue;
        }
        if (i + 1 >= argc) return usage();
        std::string v = argv[++i];
        if (a == "--service") cfg.consul_service = v;
        else if (a == "--token") token = v;
        else if (a == "--dc") cfg.consul_datacenter = v;
        else if (a == "--wait") cfg.consul_wait = std::atof(v.c_str());
        else if (a == "--primary-tags") cfg.consul_primary_tags = split(v);
        else if (a == "--replica-tags") cfg.consul_replica_tags = split(v);
        else if (a == "--period") period = std::atof(v.c_str());
        else if (a == "--seconds") seconds = std::atof(v.c_str());
        else return usage();
    }
    spdlog::set_default_logger(spdlog::stderr_color_mt("probe"));  // stdout stays parseable
    spdlog::set_level(verbose ? spdlog::level::debug : spdlog::level::info);

    boost::asio::io_context ioc;
    discovery::Callbacks cb;
    cb.publish = [](routing::Discovered d) { emit(format(d)); };
    cb.status = [](std::string s) { emit("status " + s); };
    std::unique_ptr<discovery::Source> source = kind == "consul"
                                                    ? discovery::start_consul(ioc.get_executor(), cfg, token, cb)
                                                    : discovery::start_patroni(ioc.get_executor(), cfg, period, cb);

    std::thread stopper([&] {
        auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
        while (Clock::now() < deadline) {
            if (!until_eof) {
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
                continue;
            }
            pollfd p{0, POLLIN, 0};
            int n = ::poll(&p, 1, 100);
            if (n > 0) {
                char buf[256];
                if (p.revents & (POLLIN | POLLHUP)) {
                    ssize_t got = ::read(0, buf, sizeof buf);
                    if (got <= 0) break;  // end of file: stop
                } else {
                    break;
                }
            }
        }
        source->stop();
    });
    ioc.run();  // returns when the loop has ended after stop()
    stopper.join();
    emit("stopped");
    source.reset();
    return 0;
}
