// liaison-gateway: the HTTPS face of one agency. Runs beside the agency's
// case-management system, holds the agency's CURVE keys and talks to the
// broker through the agent library. See docs/operations.md and
// docs/openapi.yaml.
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "liaison/version.h"
#include "broker_link.h"
#include "gateway_config.h"
#include "gateway_store.h"
#include "https_server.h"
#include "liaison/logging.h"
#include "webhook.h"

namespace {

// The broker endpoints, comma-separated, for the start-up log line.
std::string BrokerList(const liaison::AgentOptions& agent) {
  if (agent.broker_endpoints.empty()) return agent.broker_endpoint;
  std::string list;
  for (const auto& endpoint : agent.broker_endpoints) list += (list.empty() ? "" : ",") + endpoint;
  return list;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace liaison::gateway;
  CLI::App app{"liaison-gateway: HTTPS gateway between one agency's system and the liaison broker"};
  std::string config_path, ready_file, log_level;
  app.set_version_flag("--version", [] { return liaison::VersionText("liaison-gateway"); },
                       "print the version, the source it was built from and the library versions, and exit");
  app.add_option("--config", config_path, "gateway config (see deploy/config/gateway.yaml)")->required();
  app.add_option("--ready-file", ready_file, "write the bound HOST:PORT here once serving (for scripts)");
  app.add_option("--log-level", log_level, "overrides log.level");
  CLI11_PARSE(app, argc, argv);

  auto config = LoadGatewayConfig(config_path);
  if (!config.ok()) {
    std::cerr << "liaison-gateway: " << config.status().message() << "\n";
    return 2;
  }
  if (!log_level.empty()) config->log.level = log_level;
  if (auto st = liaison::SetupLogging("liaison-gateway", config->log); !st.ok()) {
    std::cerr << "liaison-gateway: " << st.message() << "\n";
    return 2;
  }

  // Signals are taken by sigwait() on this thread; every thread started
  // below inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto store = GatewayStore::Open(config->state_file, config->state_key_file);
  if (!store.ok()) {
    spdlog::critical("event=start_failed error=\"{}\"", store.status().message());
    return 1;
  }
  Inbox inbox;
  BrokerLink link(config->agent, **store, inbox);
  HttpsServer server(*config, **store, inbox, link);
  std::unique_ptr<Webhook> webhook;
  if (config->webhook) webhook = std::make_unique<Webhook>(*config->webhook, inbox, link, **store);
  link.OnDelivery([&] {
    server.NotifyDelivery();
    if (webhook) webhook->Notify();
  });
  if (auto st = server.Start(); !st.ok()) {
    spdlog::critical("event=start_failed error=\"{}\"", st.message());
    return 1;
  }
  if (webhook) {
    if (auto st = webhook->Start(); !st.ok()) {
      spdlog::critical("event=start_failed error=\"{}\"", st.message());
      return 1;
    }
  }
  if (auto st = link.Start(); !st.ok()) {
    spdlog::critical("event=start_failed error=\"{}\"", st.message());
    return 1;
  }
  spdlog::info("event=gateway_listening endpoint={} broker={} mode={}", server.endpoint(),
               BrokerList(config->agent), webhook ? "webhook" : "inbox");
  if (!ready_file.empty()) {
    std::ofstream(ready_file + ".tmp") << server.endpoint() << "\n";
    std::rename((ready_file + ".tmp").c_str(), ready_file.c_str());
  }

  // Receipts are kept keep_receipts_days after the broker answered.
  const auto keep = std::chrono::hours(24) * config->keep_receipts_days;
  timespec tick{60, 0};
  for (;;) {
    const int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      spdlog::info("event=stopping signal={}", sig);
      break;
    }
    const auto cutoff = std::chrono::system_clock::now() - keep;
    auto purged = (*store)->Purge(
        std::chrono::duration_cast<std::chrono::milliseconds>(cutoff.time_since_epoch()).count());
    if (!purged.ok()) spdlog::error("event=purge_failed error=\"{}\"", purged.status().message());
  }
  // No new requests first; then the link, which still sends the acks the
  // system was told 200 for.
  server.Stop();
  if (webhook) webhook->Stop();
  link.Stop();
  spdlog::info("event=stopped");
  return 0;
}
