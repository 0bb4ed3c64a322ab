package telhawk.opensearch;

import java.util.Collection;

import org.opensearch.env.Environment;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

/**
 * A plain {@link Node} whose plugins come from the classpath instead of the
 * {@code modules/} and {@code plugins/} directories of a distribution.
 * The constructor that accepts classpath plugins is protected, hence this subclass.
 */
final class LocalNode extends Node {

    LocalNode(Environment environment, Collection<Class<? extends Plugin>> classpathPlugins) {
        super(environment, classpathPlugins, true);
    }
}
