"""midjourney-proxy servers. Only the health probe so far: the /mj relay is its own issue."""

from providers.base import Adapter, Capability, Target, UpstreamRequest


class MidjourneyAdapter(Adapter):
    name = "midjourney"
    capabilities = frozenset({Capability.PROBE})

    def probe_request(self, target: Target) -> UpstreamRequest:
        headers = {"mj-api-secret": target.api_key, **target.extra_headers}
        return UpstreamRequest("GET", f"{target.base_url}/mj/task/list", headers, None)


__all__ = ["MidjourneyAdapter"]
