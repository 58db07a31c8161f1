// Installs the fake cluster (tests/fake.ts) as window.WebTransport in a page,
// for tests/ui-fake.mjs. Bundled to an IIFE and injected as an init script.
import { create } from "@bufbuild/protobuf";
import { FakeCluster } from "./fake";
const c = new FakeCluster();
c.hideChat = true;
c.install();
(window as any).fakeCluster = c;
void create;
