package telhawk.opensearch;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

/**
 * Starts a single-node OpenSearch bound to 127.0.0.1 and blocks until the JVM is asked to exit.
 *
 * <pre>
 * java -Xmx512m -cp 'target/classes:target/lib/*' telhawk.opensearch.Launcher HOME [-Ekey=value ...]
 * </pre>
 *
 * HOME is created if needed and gets empty {@code config/}, {@code modules/}, {@code plugins/}
 * directories plus {@code data/} and {@code logs/}. Any {@code -Ekey=value} argument is passed
 * through as a node setting and overrides the defaults below.
 */
public final class Launcher {

    /** Plugins loaded from the classpath; all of them must be present. */
    private static final List<String> PLUGIN_CLASSES = List.of(
        "org.opensearch.transport.Netty4Plugin",
        "org.opensearch.analysis.common.CommonAnalysisPlugin",
        "org.opensearch.painless.PainlessPlugin",
        "org.opensearch.ingest.common.IngestCommonPlugin",
        "org.opensearch.index.mapper.MapperExtrasPlugin",
        "org.opensearch.index.reindex.ReindexPlugin"
    );

    private static final String DEFAULT_NODE_NAME = "local-opensearch";

    private Launcher() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 1 || args[0].startsWith("-")) {
            System.err.println("usage: Launcher HOME [-Ekey=value ...]");
            System.exit(2);
        }
        Path home = Paths.get(args[0]).toAbsolutePath().normalize();
        Map<String, String> overrides = parseOverrides(args);

        for (String dir : List.of("config", "modules", "plugins", "data", "logs")) {
            Files.createDirectories(home.resolve(dir));
        }

        Settings.Builder builder = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "telhawk-test")
            .put("node.name", DEFAULT_NODE_NAME)
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", "9200")
            .put("transport.port", "9300")
            .put("cluster.routing.allocation.disk.threshold_enabled", false);
        overrides.forEach(builder::put);
        Settings settings = builder.build();
        String nodeName = settings.get("node.name", DEFAULT_NODE_NAME);

        List<Class<? extends Plugin>> plugins = loadPlugins();
        Node node;
        try {
            Environment environment = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), null, () -> nodeName);
            node = new LocalNode(environment, plugins);
        } catch (Throwable t) {
            failStartup(t);
            return;
        }

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                if (node.awaitClose(15, TimeUnit.SECONDS) == false) {
                    System.err.println("node did not close within 15s");
                }
            } catch (IOException | InterruptedException e) {
                System.err.println("error while closing node: " + e);
            } finally {
                stopped.countDown();
            }
        }, "local-opensearch-shutdown"));

        try {
            node.start();
        } catch (Throwable t) {
            failStartup(t);
        }
        System.out.println("local-opensearch started: http://" + settings.get("network.host") + ":" + settings.get("http.port")
            + " home=" + home);
        stopped.await();
    }

    /**
     * Halts rather than exits: a half-constructed node may have started non-daemon threads,
     * and the shutdown hook must not try to close a node that never started.
     */
    private static void failStartup(Throwable t) {
        System.err.println("failed to start node: " + t);
        t.printStackTrace();
        System.err.flush();
        Runtime.getRuntime().halt(1);
    }

    private static Map<String, String> parseOverrides(String[] args) {
        Map<String, String> overrides = new LinkedHashMap<>();
        for (int i = 1; i < args.length; i++) {
            String arg = args[i];
            if (arg.startsWith("-E") == false || arg.indexOf('=') < 3) {
                System.err.println("unexpected argument (expected -Ekey=value): " + arg);
                System.exit(2);
            }
            int eq = arg.indexOf('=');
            overrides.put(arg.substring(2, eq), arg.substring(eq + 1));
        }
        return overrides;
    }

    private static List<Class<? extends Plugin>> loadPlugins() {
        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (String name : PLUGIN_CLASSES) {
            try {
                plugins.add(Class.forName(name).asSubclass(Plugin.class));
            } catch (ClassNotFoundException | ClassCastException e) {
                System.err.println("required plugin class not loadable: " + name + " (" + e + ")");
                System.exit(3);
            }
        }
        return plugins;
    }
}
