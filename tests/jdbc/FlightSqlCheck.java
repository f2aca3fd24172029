// Talks to allot's Arrow Flight SQL endpoint through the Arrow Flight SQL JDBC
// driver, the path DBeaver and Tableau take: user name and password (the allot
// token) at connect, the tables through DatabaseMetaData, then one query.
// Prints one line per finding for the Rust test to check.
//
//   java -cp flight-sql-jdbc-driver.jar FlightSqlCheck.java HOST:PORT
//
// The token comes from the environment: ALLOT_TENANT_TOKEN.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.Properties;

public class FlightSqlCheck {
    public static void main(String[] args) throws Exception {
        Properties login = new Properties();
        login.setProperty("user", "analyst");
        login.setProperty("password", System.getenv("ALLOT_TENANT_TOKEN"));
        login.setProperty("useEncryption", "false");
        String url = "jdbc:arrow-flight-sql://" + args[0];
        try (Connection conn = DriverManager.getConnection(url, login)) {
            DatabaseMetaData meta = conn.getMetaData();
            try (ResultSet tables = meta.getTables(null, null, "%", null)) {
                while (tables.next()) {
                    System.out.println("table\t" + tables.getString("TABLE_CAT") + "."
                            + tables.getString("TABLE_SCHEM") + "." + tables.getString("TABLE_NAME"));
                }
            }
            System.out.println("product\t" + meta.getDatabaseProductName());
            try (Statement statement = conn.createStatement();
                    ResultSet rows = statement.executeQuery(
                            "SELECT tenant_id, sum(value) AS total FROM usage_events"
                                    + " GROUP BY tenant_id ORDER BY tenant_id")) {
                while (rows.next()) {
                    System.out.println("row\t" + rows.getString(1) + "\t"
                            + rows.getBigDecimal(2).toPlainString());
                }
            }
        }
        try {
            Properties forged = new Properties();
            forged.setProperty("user", "analyst");
            forged.setProperty("password", "not-a-token");
            forged.setProperty("useEncryption", "false");
            DriverManager.getConnection(url, forged).close();
            System.out.println("forged\taccepted");
        } catch (java.sql.SQLException refused) {
            System.out.println("forged\trefused");
        }
    }
}
